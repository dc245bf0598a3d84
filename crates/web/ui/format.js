// How values read in the list and the detail view.

export function size(bytes) {
  if (bytes === null || bytes === undefined) return '';
  if (bytes < 1024) return `${bytes}b`;
  if (bytes < 1024 * 1024) return `${(bytes / 1024).toFixed(1)}k`;
  return `${(bytes / 1024 / 1024).toFixed(1)}m`;
}

export function duration(seconds) {
  if (seconds === null || seconds === undefined || Number.isNaN(seconds)) return '';
  if (seconds < 1) return `${Math.round(seconds * 1000)}ms`;
  return `${seconds.toFixed(2)}s`;
}

export function clock(timestamp) {
  if (!timestamp) return '';
  const date = new Date(timestamp * 1000);
  return date.toLocaleTimeString() + '.' + String(date.getMilliseconds()).padStart(3, '0');
}

// Milliseconds from `origin` (the first request byte), signed, to 0.1 ms.
export function offset(timestamp, origin) {
  if (!timestamp || !origin) return '';
  const ms = (timestamp - origin) * 1000;
  return `${ms >= 0 ? '+' : '−'}${Math.abs(ms).toFixed(1)} ms`;
}

export function url(request) {
  const defaultPort = (request.scheme === 'https' && request.port === 443) || (request.scheme === 'http' && request.port === 80);
  return `${request.scheme}://${request.pretty_host || request.host}${defaultPort ? '' : ':' + request.port}${request.path}`;
}

export function flowDuration(flow) {
  const end = flow.response ? flow.response.timestamp_end : flow.error && flow.error.timestamp;
  if (!end || !flow.request.timestamp_start) return null;
  return end - flow.request.timestamp_start;
}

// The TLS-event marker of the list, a letter for each kind of event after the
// handshake that the flow saw: R renegotiation, C certificate request (in a
// renegotiation or post-handshake), K KeyUpdate, A alert; T for any other event.
const TLS_MARKERS = [
  ['R', (type) => type === 'hello_request' || type.startsWith('renegotiation')],
  ['C', (type) => type.startsWith('certificate_request')],
  ['K', (type) => type === 'key_update'],
  ['A', (type) => type === 'alert'],
];

export function tlsMarker(flow) {
  const types = (flow.timeline || []).filter((entry) => entry.entry === 'tls').map((e) => e.type || '');
  const marker = TLS_MARKERS.filter(([, kind]) => types.some(kind)).map(([letter]) => letter).join('');
  return marker || (types.length ? 'T' : '');
}

export function icon(flow) {
  if (flow.type === 'tcp') return '⇄';
  if (flow.websocket) return '⇅';
  if (flow.error && !flow.response) return '✖';
  const type = header(flow.response && flow.response.headers, 'content-type') || '';
  if (type.includes('json')) return '{}';
  if (type.includes('html')) return '◧';
  if (type.startsWith('image/')) return '▣';
  if (type.includes('javascript')) return 'js';
  if (type.includes('css')) return '#';
  if (flow.response && flow.response.status_code >= 300 && flow.response.status_code < 400) return '↪';
  return '▤';
}

export function header(headers, name) {
  if (!headers) return null;
  const found = headers.find(([key]) => key.toLowerCase() === name.toLowerCase());
  return found ? found[1] : null;
}

export function hexdump(data, limit = 64 * 1024) {
  const lines = [];
  const shown = Math.min(data.length, limit);
  for (let i = 0; i < shown; i += 16) {
    const row = data.subarray(i, Math.min(i + 16, shown));
    const hex = Array.from(row, (b) => b.toString(16).padStart(2, '0')).join(' ');
    const ascii = Array.from(row, (b) => (b >= 32 && b < 127 ? String.fromCharCode(b) : '.')).join('');
    lines.push(`${i.toString(16).padStart(8, '0')}  ${hex.padEnd(47)}  ${ascii}`);
  }
  if (data.length > shown) lines.push(`… ${data.length - shown} more bytes`);
  return lines.join('\n');
}

export function base64ToBytes(text) {
  const binary = atob(text);
  return Uint8Array.from(binary, (c) => c.charCodeAt(0));
}

// A DOM element: el('div', {class: 'x', onclick: f}, child, 'text', ...).
export function el(tag, attributes = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(attributes)) {
    if (value === undefined || value === null || value === false) continue;
    if (key.startsWith('on')) node.addEventListener(key.slice(2), value);
    else if (key === 'class') node.className = value;
    else if (key === 'value') node.value = value;
    // CSSOM, not a style attribute: the page's CSP allows no inline styles.
    else if (key === 'style') node.style.cssText = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

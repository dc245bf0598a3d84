// The control API, as the page calls it: same origin, the session cookie, and the
// XSRF token (the readable periscope-xsrf-<port> cookie) repeated in a header on
// every request that changes something. crates/api/README.md documents each call.

export class Unauthorized extends Error {}

function xsrfToken() {
  const name = `periscope-xsrf-${location.port || '80'}=`;
  const cookie = document.cookie.split('; ').find((c) => c.startsWith(name));
  return cookie ? decodeURIComponent(cookie.slice(name.length)) : '';
}

async function call(method, path, body) {
  const headers = { 'X-XSRF-Token': xsrfToken() };
  const init = { method, headers, credentials: 'same-origin' };
  if (body instanceof Blob || body instanceof ArrayBuffer) {
    headers['Content-Type'] = 'application/octet-stream';
    init.body = body;
  } else if (body !== undefined) {
    headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const response = await fetch(path, init);
  if (response.status === 401) throw new Unauthorized('not logged in');
  if (!response.ok) {
    let message = `${response.status} ${response.statusText}`;
    try { message = (await response.json()).error || message; } catch (_) { /* not JSON */ }
    const error = new Error(message);
    error.status = response.status;
    throw error;
  }
  return response;
}

export const get = async (path) => (await call('GET', path)).json();
export const send = async (method, path, body) => (await call(method, path, body)).json();
export const text = async (path) => (await call('GET', path)).text();
export const bytes = async (path) => {
  const response = await call('GET', path);
  return { data: new Uint8Array(await response.arrayBuffer()), type: response.headers.get('content-type') || '' };
};

export function query(params) {
  const search = new URLSearchParams();
  for (const [key, value] of Object.entries(params)) {
    if (value !== undefined && value !== null && value !== '') search.set(key, value);
  }
  const text = search.toString();
  return text ? `?${text}` : '';
}

// The /updates WebSocket; calls onMessage with each {type, payload}, reconnects.
export function updates(onMessage, onOpen) {
  let socket;
  const open = () => {
    const scheme = location.protocol === 'https:' ? 'wss' : 'ws';
    socket = new WebSocket(`${scheme}://${location.host}/updates?xsrf_token=${encodeURIComponent(xsrfToken())}`);
    socket.onmessage = (event) => onMessage(JSON.parse(event.data));
    socket.onopen = () => onOpen && onOpen(socket);
    socket.onclose = () => setTimeout(open, 1000);
  };
  open();
  return {
    send: (message) => { if (socket.readyState === WebSocket.OPEN) socket.send(JSON.stringify(message)); },
  };
}

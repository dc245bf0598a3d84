// The flow view: tabs Request, Response, WebSocket, TLS, Timing, Connection, Error,
// Comment, and the actions on the flow, each one call of the control API.

import * as api from './api.js';
import { el, size, clock, offset, url, header, hexdump, base64ToBytes, duration, flowDuration } from './format.js';

const TABS = ['request', 'response', 'websocket', 'tls', 'timing', 'connection', 'error', 'comment'];
const TAB_TITLES = { request: 'Request', response: 'Response', websocket: 'WebSocket', tls: 'TLS', timing: 'Timing', connection: 'Connection', error: 'Error', comment: 'Comment' };

export class FlowDetail {
  constructor(root, { onStatus, onClose }) {
    this.root = root;
    this.onStatus = onStatus;
    this.onClose = onClose;
    this.flow = null;
    this.tab = 'request';
    this.editing = null; // 'request' | 'response' while the editor is open
  }

  async show(id) {
    try {
      const flow = await api.get(`/flows/${id}`);
      this.flow = flow;
      this.root.hidden = false;
      this.render();
    } catch (error) {
      if (error instanceof api.Unauthorized) throw error;
      this.onStatus(`cannot show the flow: ${error.message}`);
    }
  }

  // The live feed says this flow changed.
  changed(flow) {
    if (!this.flow || this.flow.id !== flow.id || this.editing) return;
    this.show(flow.id);
  }

  removed(id) {
    if (this.flow && this.flow.id === id) this.close();
  }

  close() {
    this.flow = null;
    this.editing = null;
    this.root.hidden = true;
    this.root.replaceChildren();
    this.onClose();
  }

  tabs() {
    const flow = this.flow;
    return TABS.filter((tab) => {
      if (tab === 'websocket') return !!flow.websocket;
      if (tab === 'error') return !!flow.error;
      return true;
    });
  }

  render() {
    const flow = this.flow;
    if (!this.tabs().includes(this.tab)) this.tab = 'request';
    const nav = el('nav', { class: 'tabs' }, this.tabs().map((tab) => el('button', {
      class: tab === this.tab ? 'tab active' : 'tab',
      'data-tab': tab,
      onclick: () => { this.tab = tab; this.editing = null; this.render(); },
    }, TAB_TITLES[tab])), el('button', { class: 'close', title: 'close (Esc)', onclick: () => this.close() }, '×'));
    const title = el('div', { class: 'detail-title' },
      el('span', { class: 'method' }, flow.request.method), ' ', el('span', { class: 'url' }, url(flow.request)),
      flow.intercepted ? el('span', { class: 'badge intercepted' }, `intercepted at ${flow.intercept ? flow.intercept.at : ''}`) : null);
    const body = el('div', { class: 'tab-body', 'data-tab-body': this.tab });
    // replaceChildren would show a null (no held message) as the text "null".
    this.root.replaceChildren(...[title, this.actions(), this.held(), nav, body].filter(Boolean));
    const renderers = {
      request: () => this.message(body, 'request'),
      response: () => this.message(body, 'response'),
      websocket: () => this.websocket(body),
      tls: () => this.tls(body),
      timing: () => this.timing(body),
      connection: () => this.connection(body),
      error: () => this.error(body),
      comment: () => this.comment(body),
    };
    renderers[this.tab]();
  }

  async act(what, method, path, body) {
    try {
      const answer = await api.send(method, path, body);
      this.onStatus(`${what}: done`);
      return answer;
    } catch (error) {
      if (error instanceof api.Unauthorized) throw error;
      this.onStatus(`${what} failed: ${error.message}`);
      return null;
    }
  }

  actions() {
    const flow = this.flow;
    const id = flow.id;
    const button = (label, title, onclick, attributes = {}) => el('button', { title, onclick, 'data-action': label.toLowerCase(), ...attributes }, label);
    const exportSelect = el('select', { 'data-action': 'export', title: 'export the flow' },
      el('option', { value: '' }, 'Export…'),
      ['curl', 'httpie', 'raw', 'raw-request', 'raw-response', 'har'].map((f) => el('option', { value: f }, f)));
    exportSelect.addEventListener('change', () => { const format = exportSelect.value; exportSelect.value = ''; if (format) this.exportAs(format); });
    return el('div', { class: 'actions' },
      flow.intercepted ? button('Resume', 'let the flow go on (a)', () => this.act('resume', 'POST', `/flows/${id}/resume`)) : null,
      button('Kill', 'end the flow; the client gets an error (x)', () => this.act('kill', 'POST', `/flows/${id}/kill`)),
      button('Replay', 'send the request again (r)', async () => {
        const answer = await this.act('replay', 'POST', `/flows/${id}/replay`);
        if (answer) this.onStatus(`replayed as ${answer.id}`);
      }),
      button('Duplicate', 'copy the flow (D)', () => this.act('duplicate', 'POST', `/flows/${id}/duplicate`)),
      flow.modified ? button('Revert', 'put back what was recorded (V)', () => this.act('revert', 'POST', `/flows/${id}/revert`)) : null,
      button(flow.marked ? 'Unmark' : 'Mark', 'mark the flow (m)', () => this.act('mark', 'PUT', `/flows/${id}`, { marked: !flow.marked })),
      button('Delete', 'delete the flow (d)', async () => { if (await this.act('delete', 'DELETE', `/flows/${id}`)) this.close(); }),
      exportSelect);
  }

  // What a paused flow waits for besides resume: a WebSocket message to let through
  // (changed or not) or drop, or the client certificate for a server's request.
  held() {
    const flow = this.flow;
    const at = flow.intercept;
    if (!at) return null;
    const id = flow.id;
    if (at.at === 'websocket_message') {
      const message = at.message;
      const text = typeof message.content === 'string' ? message.content : null;
      const editor = el('textarea', { class: 'held-message', 'data-held': 'websocket', spellcheck: 'false' });
      editor.value = text === null ? hexdump(base64ToBytes(message.content.base64)) : text;
      if (text === null) editor.readOnly = true;
      return el('div', { class: 'held' },
        el('h4', {}, `Held: a ${message.type} message ${message.from_client ? 'from the client' : 'from the server'}`),
        editor,
        el('div', { class: 'toolbar' },
          el('button', { 'data-action': 'ws-send', onclick: () => this.act('send the message', 'POST', `/flows/${id}/websocket/decision`,
            text === null || editor.value === text ? { action: 'resume' } : { action: 'resume', content: editor.value }) }, 'Send'),
          el('button', { 'data-action': 'ws-drop', onclick: () => this.act('drop the message', 'POST', `/flows/${id}/websocket/decision`, { action: 'drop' }) }, 'Drop')));
    }
    if (at.at === 'client_certificate') {
      const path = el('input', { class: 'certificate-path', placeholder: '/path/to/cert-and-key.pem' });
      const choose = (choice) => this.act('choose the client certificate', 'POST', `/flows/${id}/client-certificate`, choice);
      return el('div', { class: 'held' },
        el('h4', {}, `Held: the server asks for a client certificate${at.post_handshake ? ' (post-handshake)' : ' (renegotiation)'}`),
        el('p', {}, 'Accepted CAs:'), el('ul', { class: 'ca-names' }, (at.ca_names || []).map((ca) => el('li', {}, ca))),
        el('div', { class: 'toolbar' },
          el('button', { 'data-action': 'cert-configured', onclick: () => choose({ certificate: 'configured' }) }, 'The configured one'),
          el('button', { 'data-action': 'cert-none', onclick: () => choose({ certificate: 'none' }) }, 'None'),
          path,
          el('button', { 'data-action': 'cert-file', onclick: () => choose({ certificate: 'file', path: path.value }) }, 'This PEM file')));
    }
    return null;
  }

  async exportAs(format) {
    const flow = this.flow;
    let text;
    try {
      if (format === 'har') text = await api.text(`/flows/${flow.id}/export/har`);
      else text = await api.text(`/flows/${flow.id}/export/${format}`);
    } catch (error) {
      this.onStatus(`export failed: ${error.message}`);
      return;
    }
    const output = el('textarea', { class: 'export-output', readonly: true, 'data-export': format, spellcheck: 'false' });
    output.value = text;
    const copy = el('button', { onclick: () => navigator.clipboard && navigator.clipboard.writeText(text) }, 'Copy');
    const save = el('button', { onclick: () => {
      const link = el('a', { href: URL.createObjectURL(new Blob([text])), download: `flow-${flow.id}.${format === 'har' ? 'har' : 'txt'}` });
      link.click();
    } }, 'Save');
    const dialog = el('div', { class: 'export' }, el('h3', {}, `Export as ${format}`), output, copy, save,
      el('button', { onclick: () => dialog.remove() }, 'Close'));
    this.root.append(dialog);
  }

  message(body, part) {
    const flow = this.flow;
    const message = flow[part];
    if (!message) {
      body.append(el('p', { class: 'empty' }, flow.error ? 'No response: see Error.' : 'No response yet.'));
      return;
    }
    if (this.editing === part) { this.editor(body, part, message); return; }
    const first = part === 'request'
      ? `${message.method} ${message.path} ${message.http_version}`
      : `${message.http_version} ${message.status_code} ${message.reason}`;
    // (append would show a null as the text "null".)
    body.append(...[
      el('div', { class: 'toolbar' }, el('button', { 'data-action': `edit-${part}`, onclick: () => { this.editing = part; this.render(); } }, 'Edit')),
      el('div', { class: 'first-line' }, first),
      headerTable(message.headers),
      message.trailers ? el('h4', {}, 'Trailers') : null,
      message.trailers ? headerTable(message.trailers) : null].filter(Boolean));
    const bodyBox = el('div', { class: 'body' });
    body.append(bodyBox);
    this.bodyView(bodyBox, part, message);
  }

  async bodyView(box, part, message) {
    const flow = this.flow;
    if (!message.contentLength) { box.append(el('p', { class: 'empty' }, 'No body.')); return; }
    const path = `/flows/${flow.id}/${part}/content.data`;
    let content;
    let decoded = true;
    try {
      content = await api.bytes(`${path}?decode=true`);
    } catch (error) {
      decoded = false;
      try { content = await api.bytes(path); } catch (e) { box.append(el('p', { class: 'error' }, e.message)); return; }
    }
    const type = (header(message.headers, 'content-type') || '').toLowerCase();
    const encoding = header(message.headers, 'content-encoding');
    const views = ['auto', 'json', 'form', 'text', 'hex', 'image'];
    const select = el('select', { 'data-body-view': part }, views.map((v) => el('option', { value: v }, v)));
    const out = el('div', { class: 'body-content' });
    const note = el('span', { class: 'note' },
      `${size(content.data.length)}${encoding ? (decoded ? `, decoded from ${encoding}` : `, ${encoding} (could not decode)`) : ''}${message.truncated ? `, truncated (of ${size(message.size)})` : ''}`);
    const draw = () => { out.replaceChildren(renderBody(select.value === 'auto' ? guessView(type, content.data) : select.value, content.data, type)); };
    select.addEventListener('change', draw);
    box.append(el('div', { class: 'body-bar' }, 'View ', select, ' ', note), out);
    draw();
  }

  editor(body, part, message) {
    const flow = this.flow;
    const fields = part === 'request'
      ? [['method', message.method], ['scheme', message.scheme], ['host', message.host], ['port', message.port], ['path', message.path]]
      : [['status_code', message.status_code], ['reason', message.reason]];
    const inputs = {};
    const form = el('div', { class: 'editor', 'data-editor': part });
    form.append(el('div', { class: 'fields' }, fields.map(([name, value]) => {
      inputs[name] = el('input', { name, value: String(value) });
      return el('label', {}, name, ' ', inputs[name]);
    })));
    const rows = el('tbody');
    const addRow = (name = '', value = '') => {
      const row = el('tr', {}, el('td', {}, el('input', { class: 'header-name', value: name })), el('td', {}, el('input', { class: 'header-value', value })),
        el('td', {}, el('button', { title: 'remove', onclick: () => row.remove() }, '−')));
      rows.append(row);
    };
    for (const [name, value] of message.headers) addRow(name, value);
    form.append(el('table', { class: 'headers edit' }, el('thead', {}, el('tr', {}, el('th', {}, 'Name'), el('th', {}, 'Value'), el('th'))), rows),
      el('button', { 'data-action': 'add-header', onclick: () => addRow() }, 'Add header'));
    // The body is sent back only when its text was changed: a body that is not
    // UTF-8 text, still compressed or cut by the body limit would be corrupted by a
    // round trip through a textarea, so it stays as recorded and cannot be edited here.
    const textarea = el('textarea', { class: 'body-editor', spellcheck: 'false', placeholder: 'body', readonly: '' });
    const bodyNote = el('p', { class: 'body-note', 'data-body-note': '' });
    form.append(textarea, bodyNote);
    let loadedText = null;
    const encoding = header(message.headers, 'content-encoding');
    if (message.truncated) {
      bodyNote.textContent = 'The body was cut by the body limit: it is kept as recorded.';
    } else if (encoding && encoding.trim().toLowerCase() !== 'identity') {
      bodyNote.textContent = `The body is ${encoding}-encoded: it is kept as recorded (edit it with the API's content field).`;
    } else {
      api.bytes(`/flows/${flow.id}/${part}/content.data`).then(({ data }) => {
        let text;
        try {
          text = new TextDecoder('utf-8', { fatal: true }).decode(data);
        } catch {
          bodyNote.textContent = `The body is binary (${data.length} bytes): it is kept as recorded.`;
          return;
        }
        // A text box turns CR LF into LF (multipart bodies, HTTP-style text): such a
        // body would change by being shown.
        if (text.includes('\r')) {
          bodyNote.textContent = 'The body has CR line ends, which a text box cannot keep: it is kept as recorded (edit it with the API\'s content field).';
          return;
        }
        textarea.value = text;
        loadedText = textarea.value;
        textarea.removeAttribute('readonly');
      }).catch((error) => { bodyNote.textContent = `The body could not be loaded (${error.message}): it is kept as recorded.`; });
    }
    const save = async () => {
      const edit = {};
      for (const [name] of fields) {
        const value = inputs[name].value;
        edit[name] = name === 'port' || name === 'status_code' ? Number(value) : value;
      }
      edit.headers = Array.from(rows.querySelectorAll('tr'))
        .map((tr) => [tr.querySelector('.header-name').value, tr.querySelector('.header-value').value])
        .filter(([name]) => name.trim() !== '');
      if (loadedText !== null && textarea.value !== loadedText) edit.content = textarea.value;
      const answer = await this.act(`edit ${part}`, 'PUT', `/flows/${flow.id}`, { [part]: edit });
      if (answer) { this.editing = null; this.flow = answer; this.render(); }
    };
    form.append(el('div', { class: 'toolbar' },
      el('button', { 'data-action': 'save-edit', onclick: save }, 'Save'),
      el('button', { onclick: () => { this.editing = null; this.render(); } }, 'Cancel')));
    body.append(form);
  }

  websocket(body) {
    const ws = this.flow.websocket;
    const origin = this.flow.request.timestamp_start;
    body.append(el('p', {}, `${ws.messages_meta ? ws.messages_meta.count : 0} messages${ws.extensions ? `, ${ws.extensions}` : ''}${ws.close_code !== undefined && ws.close_code !== null ? `; closed by the ${ws.closed_by_client ? 'client' : 'server'} with ${ws.close_code} ${ws.close_reason || ''}` : ''}`));
    const rows = (ws.messages || []).map((m) => {
      const content = typeof m.content === 'string' ? m.content : hexdump(base64ToBytes(m.content.base64), 4096);
      return el('tr', { class: m.from_client ? 'from-client' : 'from-server' },
        el('td', {}, m.from_client ? '→ server' : '← client'), el('td', {}, offset(m.timestamp, origin)), el('td', {}, m.type),
        el('td', {}, size(m.size)), el('td', {}, el('pre', {}, content)));
    });
    if (!ws.timestamp_end) {
      const text = el('input', { class: 'inject-text', placeholder: 'a text message' });
      const inject = (toClient) => this.act('inject', 'POST', `/flows/${this.flow.id}/websocket/inject`, { to_client: toClient, content: text.value, binary: false });
      body.append(el('div', { class: 'toolbar inject' }, 'Write ', text,
        el('button', { 'data-action': 'inject-client', onclick: () => inject(true) }, 'to the client'),
        el('button', { 'data-action': 'inject-server', onclick: () => inject(false) }, 'to the server')));
    }
    body.append(el('table', { class: 'messages' }, el('thead', {}, el('tr', {}, ['Direction', 'Time', 'Type', 'Size', 'Content'].map((h) => el('th', {}, h)))), el('tbody', {}, rows)));
  }

  tls(body) {
    const flow = this.flow;
    const leg = (name, conn) => {
      if (!conn) return el('div', { class: 'leg' }, el('h4', {}, name), el('p', { class: 'empty' }, 'no connection'));
      if (!conn.tls_established) return el('div', { class: 'leg' }, el('h4', {}, name), el('p', { class: 'empty' }, 'not TLS'));
      return el('div', { class: 'leg', 'data-leg': name.toLowerCase() }, el('h4', {}, name), keyValues([
        ['Version', conn.tls_version], ['Cipher', conn.cipher], ['ALPN', conn.alpn], ['SNI', conn.sni],
        ['Key exchange', conn.tls_key_exchange],
        ['Handshake done', conn.timestamp_tls_setup ? offset(conn.timestamp_tls_setup, flow.request.timestamp_start) : ''],
      ]), conn.cert ? certificate(conn.cert) : el('p', { class: 'empty' }, name === 'Client leg' ? 'no client certificate' : 'no certificate'),
        (conn.cert_chain || []).length ? el('div', { class: 'cert-chain' }, el('h4', {}, `Chain sent with it (${conn.cert_chain.length})`), conn.cert_chain.map(certificate)) : null);
    };
    body.append(el('div', { class: 'legs' }, leg('Client leg', flow.client_conn), leg('Server leg', flow.server_conn)));
    const origin = flow.request.timestamp_start;
    const events = (flow.timeline || []).filter((entry) => entry.entry === 'tls');
    body.append(el('h4', {}, 'Events after the handshake ', el('span', { class: 'note' }, '(time from the first request byte)')));
    if (!events.length) { body.append(el('p', { class: 'empty', 'data-tls-events': '0' }, 'None: no renegotiation, certificate request, KeyUpdate or alert.')); return; }
    body.append(el('table', { class: 'tls-events', 'data-tls-events': String(events.length) },
      el('thead', {}, el('tr', {}, ['Time', 'Leg', 'Event', 'Details'].map((h) => el('th', {}, h)))),
      el('tbody', {}, events.map((event) => el('tr', { class: `tls-${event.type}`, 'data-type': event.type },
        el('td', { class: 'time' }, offset(event.timestamp, origin)),
        el('td', {}, event.leg),
        el('td', {}, event.type.replaceAll('_', ' ')),
        el('td', {}, event.text,
          event.ca_names && event.ca_names.length ? el('ul', { class: 'ca-names' }, event.ca_names.map((ca) => el('li', {}, ca))) : null))))));
  }

  timing(body) {
    const flow = this.flow;
    const at = {};
    for (const entry of flow.timeline || []) if (entry.entry === 'milestone') at[entry.milestone] = entry.timestamp;
    const phases = [
      ['client connect → TLS', at.client_connected, at.client_tls_established, 'client-tls'],
      ['connect', at.server_connect_initiated, at.server_tcp_connected, 'connect'],
      ['server TLS', at.server_tcp_connected, at.server_tls_established, 'tls'],
      ['request', at.request_started || flow.request.timestamp_start, at.request_complete || flow.request.timestamp_end, 'request'],
      ['wait', at.request_complete || flow.request.timestamp_end, at.response_started || (flow.response && flow.response.timestamp_start), 'wait'],
      ['response', at.response_started || (flow.response && flow.response.timestamp_start), at.response_complete || (flow.response && flow.response.timestamp_end), 'response'],
    ].filter(([, start, end]) => start && end && end >= start);
    const tls = (flow.timeline || []).filter((entry) => entry.entry === 'tls');
    // Renegotiations: from their start to their end (or a mark when one is missing).
    const renegotiations = [];
    let open = null;
    for (const event of tls) {
      if (event.type === 'renegotiation_started' || (event.type === 'certificate_requested' && event.post_handshake && !open)) open = event;
      if ((event.type === 'renegotiation_completed' || event.type === 'renegotiation_refused' || (event.type === 'certificate_presented' && open && open.post_handshake)) && open) {
        renegotiations.push([open.timestamp, event.timestamp, event.leg]);
        open = null;
      }
    }
    if (open) renegotiations.push([open.timestamp, open.timestamp, open.leg]);
    const times = [...phases.flatMap(([, s, e]) => [s, e]), ...tls.map((e) => e.timestamp)].filter(Boolean);
    if (!times.length) { body.append(el('p', { class: 'empty' }, 'No timing recorded.')); return; }
    const start = Math.min(...times);
    const end = Math.max(...times);
    const span = Math.max(end - start, 1e-6);
    const pct = (t) => `${(((t - start) / span) * 100).toFixed(3)}%`;
    const width = (s, e) => `${Math.max(((e - s) / span) * 100, 0.3).toFixed(3)}%`;
    const origin = flow.request.timestamp_start;
    const rows = phases.map(([name, s, e, kind]) => el('div', { class: 'wf-row', 'data-phase': kind },
      el('span', { class: 'wf-label' }, name),
      el('span', { class: 'wf-track' }, el('span', { class: `wf-bar wf-${kind}`, style: `left:${pct(s)};width:${width(s, e)}` })),
      el('span', { class: 'wf-time' }, duration(e - s))));
    for (const [s, e, leg] of renegotiations) {
      rows.push(el('div', { class: 'wf-row', 'data-phase': 'renegotiation' },
        el('span', { class: 'wf-label' }, `renegotiation (${leg})`),
        el('span', { class: 'wf-track' }, el('span', { class: 'wf-bar wf-renegotiation', style: `left:${pct(s)};width:${width(s, e)}` })),
        el('span', { class: 'wf-time' }, `${offset(s, origin)}, ${duration(e - s)}`)));
    }
    const marks = tls.map((event) => el('span', { class: 'wf-mark', style: `left:${pct(event.timestamp)}`, title: event.text }));
    rows.push(el('div', { class: 'wf-row' }, el('span', { class: 'wf-label' }, 'TLS events'), el('span', { class: 'wf-track' }, marks), el('span', { class: 'wf-time' }, String(tls.length))));
    body.append(el('div', { class: 'waterfall' }, rows), el('p', { class: 'note' }, `total ${duration(flowDuration(flow))}`));
    body.append(el('h4', {}, 'Timeline'), el('table', { class: 'timeline' }, el('tbody', {}, (flow.timeline || []).map((entry) =>
      el('tr', { class: `entry-${entry.entry}` }, el('td', { class: 'time' }, offset(entry.timestamp, origin)), el('td', {}, clock(entry.timestamp)), el('td', {}, entry.text))))));
  }

  connection(body) {
    const flow = this.flow;
    const address = (pair) => (pair ? `${pair[0]}:${pair[1]}` : '');
    const conn = (name, c) => (c ? el('div', { class: 'leg' }, el('h4', {}, name), keyValues([
      ['Peer', address(c.peername)], ['Local', address(c.sockname)], ['Address', address(c.address)], ['Id', c.id],
      ['TLS', c.tls_established ? `${c.tls_version} ${c.cipher || ''}` : 'no'],
      ['Started', clock(c.timestamp_start)], ['TCP set up', clock(c.timestamp_tcp_setup)], ['TLS set up', clock(c.timestamp_tls_setup)], ['Ended', clock(c.timestamp_end)],
    ])) : el('div', { class: 'leg' }, el('h4', {}, name), el('p', { class: 'empty' }, 'none')));
    body.append(el('div', { class: 'legs' }, conn('Client', flow.client_conn), conn('Server', flow.server_conn)));
    body.append(keyValues([['Flow', flow.id], ['Replay of', flow.replay_of], ['Duplicate of', flow.duplicate_of], ['Request stream', flow.request.stream_id], ['Response stream', flow.response && flow.response.stream_id]]));
  }

  error(body) {
    const error = this.flow.error;
    body.append(el('p', { class: 'error-message' }, error.msg), keyValues([['Kind', error.kind], ['At', clock(error.timestamp)]]));
  }

  comment(body) {
    const textarea = el('textarea', { class: 'comment', placeholder: 'a note on this flow' });
    textarea.value = this.flow.comment || '';
    body.append(textarea, el('button', { 'data-action': 'save-comment', onclick: () => this.act('comment', 'PUT', `/flows/${this.flow.id}`, { comment: textarea.value }) }, 'Save comment'));
  }
}

function headerTable(headers) {
  return el('table', { class: 'headers' }, el('tbody', {}, (headers || []).map(([name, value]) => el('tr', {}, el('th', {}, name), el('td', {}, value)))));
}

function keyValues(pairs) {
  return el('table', { class: 'kv' }, el('tbody', {}, pairs.filter(([, v]) => v !== undefined && v !== null && v !== '').map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, String(v))))));
}

function certificate(cert) {
  return el('div', { class: 'certificate' }, keyValues([
    ['Subject', cert.subject], ['Issuer', cert.issuer], ['Names (SAN)', (cert.altnames || []).join(', ')],
    ['Valid from', cert.notbefore], ['Valid until', cert.notafter], ['Serial', cert.serial], ['SHA-256', cert.sha256],
  ]));
}

function guessView(type, data) {
  if (type.startsWith('image/')) return 'image';
  if (type.includes('json')) return 'json';
  if (type.includes('x-www-form-urlencoded')) return 'form';
  try { new TextDecoder('utf-8', { fatal: true }).decode(data); return 'text'; } catch (_) { return 'hex'; }
}

function renderBody(view, data, type) {
  const text = () => new TextDecoder().decode(data);
  switch (view) {
    case 'json':
      try { return el('pre', { class: 'json' }, JSON.stringify(JSON.parse(text()), null, 2)); } catch (error) { return el('pre', {}, `not JSON (${error.message})\n\n${text()}`); }
    case 'form':
      return el('table', { class: 'kv form' }, el('tbody', {}, Array.from(new URLSearchParams(text())).map(([k, v]) => el('tr', {}, el('th', {}, k), el('td', {}, v)))));
    case 'image':
      return el('img', { class: 'body-image', src: URL.createObjectURL(new Blob([data], { type: type || 'image/png' })), alt: 'body' });
    case 'hex':
      return el('pre', { class: 'hex' }, hexdump(data));
    default:
      return el('pre', { class: 'text' }, text());
  }
}

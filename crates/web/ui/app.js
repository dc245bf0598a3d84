// The page: login, the toolbar's boxes (search, highlight, intercept), the live
// feed, keyboard navigation, and the list and detail views.

import * as api from './api.js';
import { el, clock } from './format.js';
import { FlowList, COLUMNS } from './list.js';
import { FlowDetail } from './detail.js';

const $ = (selector) => document.querySelector(selector);

function showLogin(message) {
  $('#main').hidden = true;
  $('#login').hidden = false;
  $('#login-error').textContent = message || '';
  $('#login-token').focus();
}

$('#login-form').addEventListener('submit', (event) => {
  event.preventDefault();
  // The API checks the token, sets the session cookie and serves the page again.
  location.href = `/?token=${encodeURIComponent($('#login-token').value.trim())}`;
});

// An action failed because the session is gone: back to the login.
window.addEventListener('unhandledrejection', (event) => {
  if (event.reason instanceof api.Unauthorized) showLogin('Your session ended: log in again.');
});

function status(message) {
  $('#status').textContent = message;
}

async function start() {
  const hadToken = new URLSearchParams(location.search).has('token');
  // The token must not stay in the address bar or the history.
  if (location.search) history.replaceState(null, '', '/');
  try {
    await api.get('/options');
  } catch (error) {
    showLogin(error instanceof api.Unauthorized && hadToken ? 'That token is wrong.' : '');
    return;
  }
  $('#login').hidden = true;
  $('#main').hidden = false;

  const list = new FlowList($('#list'), {
    onSelect: (id) => { if (!detail.root.hidden) detail.show(id); },
    onOpen: (id) => detail.show(id),
    onError: (message) => { $('#filter-error').textContent = message; },
  });
  const detail = new FlowDetail($('#detail'), { onStatus: status, onClose: () => $('#list').focus() });
  window.periscope = { list, detail }; // for the browser tests and the curious

  const counter = () => { $('#count').textContent = `${list.total.toLocaleString()} flows`; };
  const originalRender = list.render.bind(list);
  list.render = () => { originalRender(); counter(); };

  // The live feed. The search and highlight filters are registered on the socket,
  // so the server says of each changed flow whether it matches them.
  const filters = { search: '', highlight: '' };
  const socket = api.updates((message) => {
    const { type, payload } = message;
    if (type === 'flows/add') list.add(payload.flow, payload.matching_filters || {});
    else if (type === 'flows/update') {
      list.update(payload.flow, payload.matching_filters || {});
      detail.changed(payload.flow);
    } else if (type === 'flows/remove') { list.refreshSoon(); detail.removed(payload); }
    else if (type === 'flows/reset') list.refreshSoon();
    // Someone else's change: the user's unsaved edits in the panel stay.
    else if (type === 'options/update') showOptions(payload, { keepEdits: true });
    else if (type === 'events/add') addEvent(payload);
  }, (ws) => {
    for (const [name, expr] of Object.entries(filters)) if (expr) ws.send(JSON.stringify({ type: 'flows/updateFilter', payload: { name, expr } }));
    list.refreshSoon();
  });
  const setFilter = (name, expr) => {
    filters[name] = expr;
    socket.send({ type: 'flows/updateFilter', payload: { name, expr } });
  };

  const onEnterOrPause = (input, apply) => {
    let timer = null;
    input.addEventListener('input', () => { clearTimeout(timer); timer = setTimeout(() => apply(input.value.trim()), 400); });
    input.addEventListener('keydown', (event) => {
      if (event.key === 'Enter') { clearTimeout(timer); apply(input.value.trim()); }
      if (event.key === 'Escape') input.blur();
    });
  };
  onEnterOrPause($('#search'), (value) => { if (value !== list.filter) { setFilter('search', value); list.setFilter(value); } });
  onEnterOrPause($('#highlight'), (value) => { if (value !== list.highlight) { setFilter('highlight', value); list.setHighlight(value); } });
  $('#intercept').addEventListener('keydown', async (event) => {
    if (event.key !== 'Enter') return;
    try {
      const options = await api.send('PUT', '/options', { intercept: $('#intercept').value.trim() });
      status(options.intercept ? `intercepting ${options.intercept}` : 'intercept off');
      showOptions(options);
      $('#intercept').classList.remove('invalid');
    } catch (error) {
      $('#intercept').classList.add('invalid');
      status(`intercept: ${error.message}`);
    }
  });
  // The options besides intercept (the rules), as the proxy reports them: one input
  // per option, shaped by its value's type. Only what the user changed is sent.
  let shownSettings = {};
  function showOptions(options, { keepEdits = false } = {}) {
    $('#intercept').value = options.intercept || '';
    $('#option-intercept').value = options.intercept || '';
    $('#option-intercept-tls').checked = !!options.intercept_tls;
    const settings = Object.fromEntries(Object.entries(options)
      .filter(([name]) => name !== 'intercept' && name !== 'intercept_tls'));
    if (keepEdits && Object.keys(changedSettings()).length) return;
    shownSettings = settings;
    const box = $('#option-settings');
    box.hidden = Object.keys(settings).length === 0;
    box.querySelectorAll('label').forEach((label) => label.remove());
    for (const name of Object.keys(settings).sort()) {
      const value = settings[name];
      if (typeof value === 'boolean') {
        box.append(el('label', {}, el('input', { type: 'checkbox', 'data-setting': name, checked: value }), ` ${name}`));
      } else if (Array.isArray(value)) {
        box.append(el('label', { class: 'setting-list' }, `${name} `,
          el('textarea', { 'data-setting': name, 'data-kind': 'list', rows: Math.max(1, value.length), spellcheck: 'false', value: value.join('\n') })));
      } else {
        box.append(el('label', {}, `${name} `, el('input', { 'data-setting': name, spellcheck: 'false', value: String(value ?? '') })));
      }
    }
  }
  function changedSettings() {
    const changed = {};
    for (const input of $('#option-settings').querySelectorAll('[data-setting]')) {
      const name = input.dataset.setting;
      let value;
      if (input.type === 'checkbox') value = input.checked;
      else if (input.dataset.kind === 'list') value = input.value.split('\n').map((l) => l.trim()).filter((l) => l);
      else value = input.value;
      if (JSON.stringify(value) !== JSON.stringify(shownSettings[name])) changed[name] = value;
    }
    return changed;
  }
  showOptions(await api.get('/options'));
  $('#options-button').addEventListener('click', () => { $('#options').hidden = !$('#options').hidden; });
  $('#options').addEventListener('submit', async (event) => {
    event.preventDefault();
    try {
      const options = await api.send('PUT', '/options', {
        intercept: $('#option-intercept').value.trim(),
        intercept_tls: $('#option-intercept-tls').checked,
        ...changedSettings(),
      });
      showOptions(options);
      $('#options-result').textContent = 'applied';
      $('#options-result').className = '';
    } catch (error) {
      $('#options-result').textContent = error.message;
      $('#options-result').className = 'error';
    }
  });

  $('#resume-all').addEventListener('click', async () => status(`resumed ${(await api.send('POST', '/flows/resume')).resumed}`));
  $('#kill-all').addEventListener('click', async () => status(`killed ${(await api.send('POST', '/flows/kill')).killed}`));
  $('#clear').addEventListener('click', async () => {
    if (!confirm('Delete every flow of this session?')) return;
    await api.send('POST', '/clear');
    detail.close();
    list.reload();
  });

  // Session files: the shown flows saved; a saved session's flows added.
  $('#save').addEventListener('click', () => {
    const link = el('a', { href: `/flows/dump${api.query({ filter: list.filter })}`, download: 'flows.periscope' });
    document.body.append(link);
    link.click();
    link.remove();
  });
  $('#open').addEventListener('change', async () => {
    const file = $('#open').files[0];
    if (!file) return;
    try {
      const { added } = await api.send('POST', '/flows/dump', file);
      status(`opened ${file.name}: ${added} flows added`);
    } catch (error) {
      status(`cannot open ${file.name}: ${error.message}`);
    }
    $('#open').value = '';
    list.reload();
  });

  // Columns: which ones show (kept in the browser).
  $('#columns-button').addEventListener('click', () => {
    const menu = $('#columns-menu');
    menu.hidden = !menu.hidden;
    menu.replaceChildren(...COLUMNS.map((column) => {
      const box = el('input', { type: 'checkbox', 'data-column': column.id, checked: !list.hidden.has(column.id) });
      box.addEventListener('change', () => list.setColumnVisible(column.id, box.checked));
      return el('label', {}, box, ` ${column.title || column.id}`);
    }));
  });

  // The event log.
  const events = $('#events');
  function addEvent(entry) {
    events.append(el('div', { class: `event level-${entry.level}` }, el('span', { class: 'time' }, clock(entry.timestamp)), ' ', entry.message));
    while (events.children.length > 1000) events.firstChild.remove();
  }
  $('#events-button').addEventListener('click', async () => {
    events.hidden = !events.hidden;
    if (!events.hidden && !events.children.length) (await api.get('/events?limit=200')).forEach(addEvent);
  });

  // Keyboard: mitmproxy's keys where the browser leaves them free.
  document.addEventListener('keydown', async (event) => {
    if (event.target.closest('input, textarea, select') || event.ctrlKey || event.metaKey || event.altKey) return;
    const flow = detail.flow;
    const id = list.selectedId;
    const keys = {
      j: () => list.move(1),
      ArrowDown: () => list.move(1),
      k: () => list.move(-1),
      ArrowUp: () => list.move(-1),
      PageDown: () => list.move(Math.floor(list.viewport.clientHeight / 22)),
      PageUp: () => list.move(-Math.floor(list.viewport.clientHeight / 22)),
      g: () => list.select(0),
      G: () => list.select(list.total - 1),
      Enter: () => id && detail.show(id),
      Escape: () => detail.close(),
      '/': () => $('#search').focus(),
      a: () => id && api.send('POST', `/flows/${id}/resume`).catch((e) => status(e.message)),
      A: () => api.send('POST', '/flows/resume'),
      x: () => id && api.send('POST', `/flows/${id}/kill`).catch((e) => status(e.message)),
      r: () => id && api.send('POST', `/flows/${id}/replay`).then((a) => status(`replayed as ${a.id}`)).catch((e) => status(e.message)),
      m: () => flow && api.send('PUT', `/flows/${flow.id}`, { marked: !flow.marked }),
      d: () => id && api.send('DELETE', `/flows/${id}`).catch((e) => status(e.message)),
      D: () => id && api.send('POST', `/flows/${id}/duplicate`),
      V: () => id && api.send('POST', `/flows/${id}/revert`).catch((e) => status(e.message)),
    };
    const action = keys[event.key];
    if (action) { event.preventDefault(); await action(); }
  });

  await list.reload();
  $('#list').focus();
  document.body.dataset.ready = 'true';
}

start();

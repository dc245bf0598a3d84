// The flow list, virtualized: only the rows in view (and a few around them) exist in
// the DOM, and only the pages of flows they show are fetched from the server
// (GET /flows with offset/limit, the search filter, the sort and the highlight
// evaluated there). A session of 100,000 flows costs the browser a few hundred rows.

import * as api from './api.js';
import { el, size, duration, flowDuration, tlsMarker, icon } from './format.js';

export const ROW_HEIGHT = 22;
const PAGE = 200;
const OVERSCAN = 10;

export const COLUMNS = [
  { id: 'tls', title: 'TLS', sort: 'url', width: '34px', cell: (f) => (f.request.scheme === 'https' || f.intercepted_tls ? el('span', { class: 'lock', title: 'TLS' }) : '') },
  { id: 'icon', title: '', sort: null, width: '34px', cell: (f) => icon(f) },
  { id: 'events', title: 'Ev', sort: 'tls', width: '40px', cell: (f) => tlsMarker(f), hint: 'TLS events after the handshake: R renegotiation, C certificate request, K KeyUpdate, A alert, T another' },
  { id: 'path', title: 'Path', sort: 'url', width: 'minmax(200px, 1fr)', cell: (f) => `${f.request.pretty_host || f.request.host}${f.request.path}` },
  { id: 'method', title: 'Method', sort: 'method', width: '70px', cell: (f) => f.request.method },
  { id: 'status', title: 'Status', sort: 'status', width: '60px', cell: (f) => (f.response ? f.response.status_code : f.error ? '✖' : '…') },
  { id: 'size', title: 'Size', sort: 'size', width: '70px', cell: (f) => size(f.response ? f.response.size : null) },
  { id: 'time', title: 'Time', sort: 'duration', width: '70px', cell: (f) => duration(flowDuration(f)) },
];

export class FlowList {
  constructor(root, { onSelect, onOpen, onError }) {
    this.viewport = root.querySelector('#viewport');
    this.spacer = root.querySelector('#spacer');
    this.rows = root.querySelector('#rows');
    this.head = root.querySelector('#list-head');
    this.root = root;
    this.onSelect = onSelect;
    this.onOpen = onOpen;
    this.onError = onError;
    this.filter = '';
    this.highlight = '';
    this.sort = { by: 'time', order: 'asc' };
    this.hidden = new Set(JSON.parse(localStorage.getItem('periscope-hidden-columns') || '[]'));
    this.total = 0;
    this.pages = new Map(); // page number → array of flows
    this.loading = new Map(); // page number → promise
    this.generation = 0; // bumps when the view changes, so stale pages are dropped
    this.selectedIndex = -1;
    this.selectedId = null;
    this.follow = true;
    this.refreshTimer = null;
    this.renderQueued = false;
    this.viewport.addEventListener('scroll', () => this.queueRender());
    new ResizeObserver(() => this.queueRender()).observe(this.viewport);
    this.renderHead();
  }

  columns() {
    return COLUMNS.filter((c) => !this.hidden.has(c.id));
  }

  setColumnVisible(id, visible) {
    if (visible) this.hidden.delete(id); else this.hidden.add(id);
    localStorage.setItem('periscope-hidden-columns', JSON.stringify([...this.hidden]));
    this.renderHead();
    this.rows.replaceChildren();
    this.queueRender();
  }

  template() {
    return this.columns().map((c) => c.width).join(' ');
  }

  renderHead() {
    this.head.style.gridTemplateColumns = this.template();
    this.head.replaceChildren(...this.columns().map((column) => {
      const sorted = column.sort && this.sort.by === column.sort;
      return el('div', {
        class: `cell col-${column.id}${column.sort ? ' sortable' : ''}`,
        title: column.hint,
        'data-column': column.id,
        onclick: column.sort ? () => this.sortBy(column.sort) : null,
      }, column.title, sorted ? (this.sort.order === 'asc' ? ' ▲' : ' ▼') : '');
    }));
  }

  sortBy(by) {
    if (this.sort.by === by) this.sort.order = this.sort.order === 'asc' ? 'desc' : 'asc';
    else this.sort = { by, order: 'asc' };
    if (this.sort.by === 'time' && this.sort.order === 'asc') this.follow = true;
    this.renderHead();
    this.reload();
  }

  setFilter(filter) { this.filter = filter; this.selectedIndex = -1; this.reload(); }
  setHighlight(highlight) { this.highlight = highlight; this.reload(); }

  params(offset, limit) {
    const sort = this.sort.by === 'time' && this.sort.order === 'asc' ? {} : { sort: this.sort.by, order: this.sort.order };
    return api.query({ filter: this.filter, highlight: this.highlight, offset, limit, ...sort });
  }

  // Everything again: the count, then the pages in view.
  async reload() {
    this.generation += 1;
    const generation = this.generation;
    this.pages.clear();
    this.loading.clear();
    try {
      const { count } = await api.get(`/flows/count${api.query({ filter: this.filter })}`);
      if (generation !== this.generation) return;
      this.total = count;
      this.onError('');
    } catch (error) {
      if (error instanceof api.Unauthorized) throw error;
      this.onError(error.message);
      this.total = 0;
    }
    if (this.follow && this.sort.by === 'time' && this.sort.order === 'asc') this.scrollToEnd = true;
    this.render();
  }

  // Live changes come in bursts: one reload per burst.
  refreshSoon() {
    if (this.refreshTimer) return;
    this.refreshTimer = setTimeout(() => { this.refreshTimer = null; this.reload(); }, 150);
  }

  page(number) {
    if (this.pages.has(number)) return this.pages.get(number);
    if (!this.loading.has(number)) {
      const generation = this.generation;
      const promise = api.get(`/flows${this.params(number * PAGE, PAGE)}`)
        .then((flows) => {
          if (generation !== this.generation) return;
          this.pages.set(number, flows);
          this.loading.delete(number);
          // Keep memory bounded: forget pages far from the view.
          if (this.pages.size > 20) {
            const here = Math.floor(this.firstVisible() / PAGE);
            for (const key of this.pages.keys()) if (Math.abs(key - here) > 5) this.pages.delete(key);
          }
          this.queueRender();
        })
        .catch((error) => { this.loading.delete(number); this.onError(error.message); });
      this.loading.set(number, promise);
    }
    return null;
  }

  flowAt(index) {
    const page = this.page(Math.floor(index / PAGE));
    return page ? page[index % PAGE] || null : null;
  }

  firstVisible() {
    return Math.floor(this.viewport.scrollTop / ROW_HEIGHT);
  }

  queueRender() {
    if (this.renderQueued) return;
    this.renderQueued = true;
    requestAnimationFrame(() => { this.renderQueued = false; this.render(); });
  }

  render() {
    this.spacer.style.height = `${this.total * ROW_HEIGHT}px`;
    if (this.scrollToEnd) {
      this.scrollToEnd = false;
      this.viewport.scrollTop = this.spacer.offsetHeight;
    }
    const height = this.viewport.clientHeight || 600;
    const first = Math.max(0, this.firstVisible() - OVERSCAN);
    const last = Math.min(this.total, Math.ceil((this.viewport.scrollTop + height) / ROW_HEIGHT) + OVERSCAN);
    this.rows.style.transform = `translateY(${first * ROW_HEIGHT}px)`;
    const template = this.template();
    const columns = this.columns();
    const nodes = [];
    for (let index = first; index < last; index += 1) {
      const flow = this.flowAt(index);
      if (!flow) {
        nodes.push(el('div', { class: 'row loading', style: `grid-template-columns: ${template}`, 'data-index': index }, el('div', { class: 'cell' }, '…')));
        continue;
      }
      const classes = ['row'];
      if (flow.id === this.selectedId) classes.push('selected');
      if (flow.intercepted) classes.push('intercepted');
      if (flow.highlighted) classes.push('highlighted');
      if (flow.marked) classes.push('marked');
      if (flow.error) classes.push('failed');
      if (flow.is_replay) classes.push('replay');
      const row = el('div', {
        class: classes.join(' '),
        style: `grid-template-columns: ${template}`,
        'data-id': flow.id,
        'data-index': index,
        onclick: () => { this.select(index); this.onOpen(flow.id); },
      }, columns.map((column) => el('div', { class: `cell col-${column.id}` }, column.cell(flow))));
      nodes.push(row);
    }
    this.rows.replaceChildren(...nodes);
    // Following the end while the user stays there.
    this.follow = this.viewport.scrollTop + height >= this.total * ROW_HEIGHT - ROW_HEIGHT * 2;
  }

  select(index) {
    if (this.total === 0) return;
    index = Math.max(0, Math.min(this.total - 1, index));
    this.selectedIndex = index;
    const top = index * ROW_HEIGHT;
    const height = this.viewport.clientHeight;
    if (top < this.viewport.scrollTop) this.viewport.scrollTop = top;
    else if (top + ROW_HEIGHT > this.viewport.scrollTop + height) this.viewport.scrollTop = top + ROW_HEIGHT - height;
    const flow = this.flowAt(index);
    if (flow) {
      this.selectedId = flow.id;
      this.onSelect(flow.id);
    } else {
      // Its page is on the way: select it when it arrives.
      const promise = this.loading.get(Math.floor(index / PAGE));
      if (promise) promise.then(() => { if (this.selectedIndex === index) this.select(index); });
    }
    this.queueRender();
  }

  move(delta) { this.select((this.selectedIndex < 0 ? this.firstVisible() - 1 : this.selectedIndex) + delta); }

  // A flow changed: replace it where it is shown; a new or removed flow reloads.
  update(flow, matches) {
    for (const page of this.pages.values()) {
      const index = page.findIndex((f) => f.id === flow.id);
      if (index >= 0) {
        if (matches.search === false) { this.refreshSoon(); return; }
        if (this.highlight) flow.highlighted = matches.highlight === true;
        page[index] = flow;
        this.queueRender();
        return;
      }
    }
    if (matches.search !== false) this.refreshSoon();
  }

  add(flow, matches) {
    if (matches.search === false) return;
    this.refreshSoon();
  }

  renderedRows() { return this.rows.children.length; }
}

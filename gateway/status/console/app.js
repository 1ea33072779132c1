// The commissioning page: polls /api/v1/status once a second while visible
// and shows it. Every value from a device or the config reaches the page as
// textContent, never as HTML.
'use strict';
(() => {
  const $ = (id) => document.getElementById(id);
  const el = (tag, cls, text) => {
    const e = document.createElement(tag);
    if (cls) e.className = cls;
    if (text !== undefined) e.textContent = text;
    return e;
  };
  const set = (e, text) => { if (e.textContent !== text) e.textContent = text; };
  const cls = (e, c) => { if (e.className !== c) e.className = c; };

  const ago = (s) => {
    if (s == null) return '';
    if (s < 1) return 'now';
    if (s < 90) return Math.round(s) + ' s';
    if (s < 5400) return Math.round(s / 60) + ' min';
    if (s < 172800) return (s / 3600).toFixed(1) + ' h';
    return (s / 86400).toFixed(1) + ' d';
  };
  const dur = (s) => {
    if (s >= 1) return +s.toFixed(2) + ' s';
    const ms = s * 1000;
    return (ms < 10 ? +ms.toFixed(1) : Math.round(ms)) + ' ms';
  };
  const value = (v) => {
    if (v === null || v === undefined) return '—';
    if (typeof v === 'number') return Number.isInteger(v) ? String(v) : String(+v.toPrecision(7));
    return String(v);
  };
  const change = (c) => {
    if (c == null) return '';
    const s = +c.toPrecision(4);
    return (s > 0 ? '+' : '') + s;
  };

  let now = Date.now();
  const age = (t) => (t ? ago((now - Date.parse(t)) / 1000) : '');

  // facts fills a <dl> with [label, text, class] rows.
  const facts = (dl, rows) => {
    while (dl.children.length < rows.length * 2) dl.append(el('dt'), el('dd'));
    while (dl.children.length > rows.length * 2) dl.lastChild.remove();
    rows.forEach(([k, v, c], i) => {
      set(dl.children[2 * i], k);
      set(dl.children[2 * i + 1], v);
      cls(dl.children[2 * i + 1], c || '');
    });
  };

  const renderGateway = (a) => {
    const g = a.gateway;
    set($('gw-id'), g.id);
    let text = `${g.version} · board ${g.board} · up ${ago(g.uptime_s)} · ${g.config}`;
    if (g.reload) {
      text += g.reload.ok ? ` · reloaded ${age(g.reload.at)} ago` : ` · last reload failed ${age(g.reload.at)} ago: ${g.reload.error}`;
    }
    set($('gateway'), text);
    const h = $('health');
    h.hidden = a.health.length === 0;
    set(h, a.health.join(' · '));
  };

  const renderUplink = (u) => {
    if (!u) return facts($('uplink'), [['state', 'starting']]);
    const rows = [
      ['broker', u.broker || 'not connected', u.broker ? 'ok' : 'bad'],
      ['protocol', u.protocol ? 'MQTT ' + u.protocol : '—'],
      ['connected', u.connected_since ? 'for ' + age(u.connected_since) : '—'],
      ['waiting on flash', `${u.waiting} readings` + (u.waiting ? `, oldest ${ago(u.oldest_waiting_s)}` : ''), u.waiting > 1000 ? 'warn' : ''],
      ['publishing', `${u.publish_rate} readings/s, ${u.published} since start`],
    ];
    if (u.last_error) rows.push(['last error', `${u.last_error} (${age(u.last_error_at)} ago)`, u.broker ? 'muted' : 'bad']);
    facts($('uplink'), rows);
  };

  const busRows = new Map();
  const renderBuses = (buses) => {
    const body = $('buses').tBodies[0];
    for (const b of buses) {
      let r = busRows.get(b.name);
      if (!r) {
        r = el('tr');
        for (const c of ['', '', 'num', 'num', 'num', 'num']) r.append(el('td', c));
        busRows.set(b.name, r);
        body.append(r);
      }
      const cells = r.children;
      set(cells[0], b.name);
      set(cells[1], b.protocol);
      set(cells[2], String(b.requests));
      set(cells[3], String(b.errors));
      cls(cells[3], b.errors ? 'num bad' : 'num');
      set(cells[4], dur(b.wire_s));
      set(cells[5], String(b.queue));
    }
  };

  const devices = new Map();
  const makeDevice = (d) => {
    const root = el('article', 'device');
    root.dataset.device = d.name;
    const h = el('h3');
    const name = el('span', '', d.name);
    const badge = el('span', 'badge');
    h.append(name, badge);
    const meta = el('p', 'meta');
    const table = el('table', 'points');
    const head = el('tr');
    for (const [t, c] of [['point', ''], ['value', 'num'], ['unit', ''], ['age', 'num'], ['change', 'num'], ['raw', 'raw'], ['error', '']]) head.append(el('th', c, t));
    table.append(el('thead'), el('tbody'));
    table.tHead.append(head);
    const scroll = el('div', 'scroll');
    scroll.append(table);
    root.append(h, meta, scroll);
    return { root, badge, meta, body: table.tBodies[0], rows: new Map(), name: d.name.toLowerCase() };
  };

  // num is a JSON value as a number, or null.
  const num = (v) => (typeof v === 'number' ? v : null);

  const updateDevice = (v, d) => {
    const state = { answering: ['answering', 'badge ok'], failing: ['failing since ' + age(d.failing_since) + ' ago', 'badge bad'], waiting: ['not polled yet', 'badge muted'] }[d.state];
    set(v.badge, state[0]);
    cls(v.badge, state[1]);
    let meta = `bus ${d.bus} · every ${dur(d.interval_s)}`;
    if (d.last_poll) meta += ` · last poll ${age(d.last_poll)} ago, took ${dur(d.poll_s)}`;
    if (d.last_error) meta += ` · last error ${age(d.last_error_at)} ago: ${d.last_error}`;
    set(v.meta, meta);
    const reading = d.reading || { values: {}, errors: {} };
    const values = reading.values || {};
    const errors = reading.errors || {};
    const prev = (d.previous && d.previous.values) || {};
    const readAge = reading.ts ? age(reading.ts) : '';
    // A driver may read points the config does not list: shown after them.
    const points = d.points.slice();
    const listed = new Set(points.map((p) => p.name));
    for (const name of Object.keys(values).concat(Object.keys(errors))) {
      if (!listed.has(name)) {
        listed.add(name);
        points.push({ name });
      }
    }
    for (const p of points) {
      let r = v.rows.get(p.name);
      if (!r) {
        r = el('tr');
        for (const c of ['', 'num', '', 'num', 'num', 'raw', 'err']) r.append(el('td', c));
        r.children[0].textContent = p.name;
        r.dataset.point = p.name.toLowerCase();
        v.rows.set(p.name, r);
        v.body.append(r);
      }
      const c = r.children;
      const err = errors[p.name] || '';
      const stale = d.stale[p.name];
      const has = p.name in values;
      const val = has ? values[p.name] : stale ? stale.value : null;
      const changed = has && p.name in prev && prev[p.name] !== val;
      set(c[1], value(val));
      cls(c[1], err ? 'num stale' : changed ? 'num up' : 'num');
      set(c[2], p.unit || '');
      set(c[3], has ? readAge : stale ? age(stale.at) : '');
      const delta = changed && num(val) !== null && num(prev[p.name]) !== null ? change(val - prev[p.name]) : changed ? 'changed' : '';
      set(c[4], delta);
      set(c[5], d.raw[p.name] || '');
      set(c[6], err);
    }
  };

  // Raw registers cost the gateway a lookup per point: asked for only
  // while shown.
  let showRaw = false;
  $('raw').addEventListener('change', (e) => {
    showRaw = e.target.checked;
    document.body.classList.toggle('raw', showRaw);
    if (!timer) return;
    clearTimeout(timer);
    tick();
  });

  let filter = '';
  const applyFilter = () => {
    for (const v of devices.values()) {
      const deviceHit = !filter || v.name.includes(filter);
      let any = deviceHit;
      for (const r of v.rows.values()) {
        const hit = deviceHit || r.dataset.point.includes(filter);
        if (r.hidden === hit) r.hidden = !hit;
        any = any || hit;
      }
      if (v.root.hidden === any) v.root.hidden = !any;
    }
  };
  $('filter').addEventListener('input', (e) => { filter = e.target.value.trim().toLowerCase(); applyFilter(); });

  const renderDevices = (list) => {
    const box = $('devices');
    const seen = new Set();
    let prev = null;
    for (const d of list) {
      seen.add(d.name);
      let v = devices.get(d.name);
      if (!v) {
        v = makeDevice(d);
        devices.set(d.name, v);
      }
      if (d.points) v.points = d.points;
      else d.points = v.points || [];
      const want = prev ? prev.nextSibling : box.firstChild;
      if (want !== v.root) box.insertBefore(v.root, want);
      updateDevice(v, d);
      prev = v.root;
    }
    for (const [name, v] of devices) {
      if (!seen.has(name)) {
        v.root.remove();
        devices.delete(name);
      }
    }
    applyFilter();
  };

  let timer = null;
  let layout = '';
  const tick = async () => {
    timer = null;
    if (document.hidden) return; // nobody watches: no requests
    try {
      // The points' names and units come once per layout.
      const query = [layout ? 'points=0' : '', showRaw ? 'raw=1' : ''].filter(Boolean).join('&');
      const resp = await fetch('api/v1/status' + (query ? '?' + query : ''), { cache: 'no-store' });
      if (!resp.ok) throw new Error('HTTP ' + resp.status);
      const a = await resp.json();
      if (layout && a.layout !== layout) {
        layout = ''; // devices or points changed: ask again with them
        timer = setTimeout(tick, 0);
        return;
      }
      layout = a.layout;
      now = Date.parse(a.now);
      renderGateway(a);
      renderUplink(a.uplink);
      renderBuses(a.buses);
      renderDevices(a.devices);
      $('offline').hidden = true;
      document.body.dataset.updated = a.now; // for tests: the page took this status
      if (!window.edgegwFirstRender) window.edgegwFirstRender = performance.now();
    } catch (e) {
      $('offline').hidden = false;
    }
    if (!timer && !document.hidden) timer = setTimeout(tick, 1000);
  };
  document.addEventListener('visibilitychange', () => { if (!document.hidden && !timer) tick(); });
  tick();
})();

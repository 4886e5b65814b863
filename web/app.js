// app.js: the snapgate console page.  Status and the snapshot list come from
// /qmp (query-status, query-block, query-named-block-nodes, query-jobs and
// events); take/load/delete go through /hmp as savevm/loadvm/delvm, so the
// browser uses the gateway's one HMP path (name resolution, job ids, devices).
import { Qmp } from './qmp.js';
import { Hmp, hmpError, setupConsole } from './hmp.js';
import { disksOf, buildRows, humanSize, formatDate, formatClock, defaultTag } from './snapshots.js';
import { startSerial } from './serial.js';

const $ = (id) => document.getElementById(id);

// The token arrives in the URL once; the server also set it as a cookie, so
// take it out of the address bar (and of screenshots, history, bookmarks).
const params = new URLSearchParams(location.search);
const token = params.get('token') || '';
if (token) history.replaceState(null, '', location.pathname);
const wsBase = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}`;
const wsUrl = (path) => `${wsBase}${path}${token ? `?token=${encodeURIComponent(token)}` : ''}`;

const state = {
  qmp: null, hmp: null, running: null, rows: [], disks: [],
  busy: false,              // an operation of ours is in flight
  backendJobs: [],          // from query-jobs
  jobBars: new Map(),       // job id -> element
  current: loadCurrent(),
};

function loadCurrent() {
  try { return JSON.parse(localStorage.getItem('snapgate.current') || 'null'); } catch { return null; }
}
function saveCurrent(tag, how) {
  state.current = tag ? { tag, how } : null;
  try { localStorage.setItem('snapgate.current', JSON.stringify(state.current)); } catch { /* private mode */ }
}

function showError(msg) {
  $('error-text').textContent = msg;
  $('error').hidden = false;
}
$('error-close').addEventListener('click', () => { $('error').hidden = true; });

function setLink(text) { $('link').textContent = text; }

// ---- VM status ---------------------------------------------------------------
function renderStatus() {
  const b = $('vm-status');
  const st = state.running === null ? 'unknown' : state.running ? 'running' : 'paused';
  b.textContent = st;
  b.className = `badge ${st}`;
  const ok = !!state.qmp && state.running !== null;
  $('btn-stop').disabled = !ok || !state.running;
  $('btn-cont').disabled = !ok || state.running;
}

async function refreshStatus() {
  const s = await state.qmp.cmd('query-status');
  state.running = !!s.running;
  renderStatus();
}

$('btn-stop').addEventListener('click', () => vmCmd('stop'));
$('btn-cont').addEventListener('click', () => vmCmd('cont'));
async function vmCmd(cmd) {
  try { await state.qmp.cmd(cmd); await refreshStatus(); } catch (e) { showError(`${cmd}: ${e.message}`); }
}

// ---- snapshot list -------------------------------------------------------------
async function refreshSnapshots() {
  const [blk, nodes] = await Promise.all([
    state.qmp.cmd('query-block'),
    state.qmp.cmd('query-named-block-nodes').catch(() => []),
  ]);
  state.disks = disksOf(blk, nodes);
  state.rows = buildRows(state.disks);
  renderSnapshots();
}

function chip(text, cls, title) {
  const s = document.createElement('span');
  s.className = `tag-chip ${cls || ''}`;
  s.textContent = text;
  if (title) s.title = title;
  return s;
}

function renderSnapshots() {
  const body = $('snap-body');
  body.replaceChildren();
  const jobRunning = isJobRunning();
  for (const r of state.rows) {
    const tr = document.createElement('tr');
    tr.dataset.tag = r.tag;
    const isCur = state.current && state.current.tag === r.tag;
    if (isCur) tr.classList.add('current');
    const td = (text, cls) => {
      const c = document.createElement('td');
      if (cls) c.className = cls;
      if (text instanceof Node) c.append(text); else c.textContent = text;
      tr.append(c);
      return c;
    };
    const mark = document.createElement('span');
    if (isCur) {
      mark.className = 'marker';
      mark.textContent = '●';
      mark.title = `last ${state.current.how} from this console`;
      mark.setAttribute('aria-label', `last ${state.current.how}`);
    }
    td(mark);
    const tagCell = td(r.tag);
    if (r.partial) tagCell.append(chip('partial', 'partial', `missing on ${r.missing.join(', ')}`));
    if (r.duplicate) tagCell.append(chip('duplicate tag', 'partial', 'several snapshots carry this tag on one disk'));
    td(r.id, 'num');
    // VM size doubles as the with-RAM / disk-only column to keep the table narrow.
    const size = td(r.withRam ? humanSize(r.vmSize) : '', 'num');
    size.title = r.withRam ? 'with RAM: the VM state is saved' : 'disk only: no VM state';
    if (!r.withRam) size.append(chip('disk only', ''));
    td(formatDate(r.date), 'num');
    td(formatClock(r.clockNs), 'num');
    const act = td('', 'actions');
    const load = document.createElement('button');
    load.type = 'button';
    load.textContent = 'Load';
    load.dataset.action = 'load';
    load.disabled = jobRunning || !r.withRam || r.partial;
    load.title = !r.withRam ? 'disk-only snapshots hold no VM state' : r.partial ? 'not on every disk' : '';
    load.setAttribute('aria-label', `Load snapshot ${r.tag}`);
    load.addEventListener('click', () => confirmThen('Load snapshot',
      `Load snapshot “${r.tag}”? The VM returns to that moment; what happened since is lost.`,
      'Load', () => runOp(`loadvm ${r.tag}`, 'loaded', r.tag)));
    const del = document.createElement('button');
    del.type = 'button';
    del.textContent = 'Delete';
    del.dataset.action = 'delete';
    del.disabled = jobRunning;
    del.setAttribute('aria-label', `Delete snapshot ${r.tag}`);
    del.addEventListener('click', () => confirmThen('Delete snapshot',
      `Delete snapshot “${r.tag}” from every disk? This cannot be undone.`,
      'Delete', () => runOp(`delvm ${r.tag}`, 'deleted', r.tag)));
    act.append(load, del);
    body.append(tr);
  }
  $('snap-empty').hidden = state.rows.length > 0;
  const w = state.disks.filter((d) => !d.ro);
  $('snap-disks').textContent = state.disks.length
    ? `Disks: ${state.disks.map((d) => `${d.device}${d.ro ? ' (read-only)' : ''}`).join(', ')}` +
      (w.length ? ` · VM state on ${w[0].device}` : '')
    : '';
  const tagInput = $('take-tag');
  if (!tagInput.dataset.edited) tagInput.value = defaultTag(new Set(state.rows.map((r) => r.tag)));
  $('btn-take').disabled = jobRunning || !state.hmp;
}

$('take-tag').addEventListener('input', (ev) => { ev.target.dataset.edited = ev.target.value ? '1' : ''; });
$('take-form').addEventListener('submit', (ev) => {
  ev.preventDefault();
  const tag = $('take-tag').value.trim();
  if (!tag || /\s/.test(tag)) { showError('A snapshot tag must be one word without spaces.'); return; }
  const over = state.rows.some((r) => r.tag === tag);
  const go = () => { $('take-tag').dataset.edited = ''; runOp(`savevm ${tag}`, 'taken', tag); };
  if (over) confirmThen('Replace snapshot', `A snapshot “${tag}” exists. Replace it?`, 'Replace', go);
  else go();
});

// ---- confirmation dialog ----------------------------------------------------
function confirmThen(title, text, okLabel, action) {
  const dlg = $('confirm');
  $('confirm-title').textContent = title;
  $('confirm-text').textContent = text;
  $('confirm-ok').textContent = okLabel;
  dlg.returnValue = '';
  dlg.onclose = () => { if (dlg.returnValue === 'ok') action(); };
  dlg.showModal();
  $('confirm-cancel').focus();   // the safe choice is the default
}

// ---- operations and jobs --------------------------------------------------------
function isJobRunning() {
  return state.busy || state.backendJobs.some((j) => j.status !== 'concluded' && j.status !== 'null');
}

async function runOp(line, how, tag) {
  if (isJobRunning()) return;
  state.busy = true;
  $('error').hidden = true;
  clearFinishedBars();
  renderSnapshots();
  pollJobs();
  try {
    const reply = await state.hmp.exec(line);
    const err = hmpError(reply);
    if (err) {
      showError(`${line}: ${err.replace(/^Error: /, '')}`);
      markBarsFinished('failed');
    } else {
      if (how === 'deleted') { if (state.current && state.current.tag === tag) saveCurrent(null); }
      else saveCurrent(tag, how);
      markBarsFinished('done');
      if (reply.trim()) consolePane.append(`(${line}) ${reply.endsWith('\n') ? reply : reply + '\n'}`);
    }
  } catch (e) {
    showError(`${line}: ${e.message}`);
    markBarsFinished('failed');
  } finally {
    state.busy = false;
    await Promise.allSettled([refreshJobs(), refreshSnapshots(), refreshStatus()]);
  }
}

function jobBar(job) {
  let el = state.jobBars.get(job.id);
  if (!el) {
    el = document.createElement('div');
    el.className = 'job';
    el.dataset.job = job.id;
    el.innerHTML = '<span class="job-name"></span><span class="job-state"></span><progress max="100" value="0"></progress>';
    el.querySelector('.job-name').textContent = `${job.type || 'job'} ${job.id}`;
    el.querySelector('progress').setAttribute('aria-label', `progress of ${job.id}`);
    $('jobs').append(el);
    state.jobBars.set(job.id, el);
  }
  return el;
}

function setBar(el, pct, label, st) {
  const p = el.querySelector('progress');
  p.value = pct;
  el.querySelector('.job-state').textContent = label;
  el.dataset.state = st;
}

function renderJobs() {
  for (const j of state.backendJobs) {
    const el = jobBar(j);
    if (el.dataset.state === 'done' || el.dataset.state === 'failed') continue;
    const total = j['total-progress'] || 0, cur = j['current-progress'] || 0;
    const pct = total ? Math.min(100, Math.round((cur * 100) / total)) : 0;
    if (j.error) setBar(el, pct, `failed: ${j.error}`, 'failed');
    else setBar(el, pct, `${j.status} · ${pct}% (${humanSize(cur)} of ${humanSize(total)})`, 'running');
  }
}

function markBarsFinished(st) {
  for (const el of state.jobBars.values()) {
    if (el.dataset.state === 'running' || !el.dataset.state) {
      if (st === 'done') setBar(el, 100, 'completed · 100%', 'done');
      else setBar(el, el.querySelector('progress').value, 'failed', 'failed');
    }
  }
}

function clearFinishedBars() {
  for (const [id, el] of state.jobBars) {
    if (el.dataset.state === 'done' || el.dataset.state === 'failed') {
      el.remove();
      state.jobBars.delete(id);
    }
  }
}

async function refreshJobs() {
  if (!state.qmp) return;
  state.backendJobs = await state.qmp.cmd('query-jobs');
  renderJobs();
}

let pollTimer = null;
function pollJobs() {
  clearTimeout(pollTimer);
  const tick = async () => {
    try { await refreshJobs(); } catch { /* disconnected: reconnect logic reports it */ }
    const again = isJobRunning();
    if (!again) renderSnapshots();
    pollTimer = setTimeout(tick, again ? 200 : 3000);
  };
  tick();
}

// ---- events and connections -------------------------------------------------
let refreshQueued = null;
function onEvent(ev) {
  if (ev.event === 'STOP') { state.running = false; renderStatus(); }
  else if (ev.event === 'RESUME') { state.running = true; renderStatus(); }
  else if (ev.event === 'JOB_STATUS_CHANGE') {
    pollJobs();
    // Snapshots made by other clients (the terminal monitor, scripts) show up too.
    clearTimeout(refreshQueued);
    refreshQueued = setTimeout(() => refreshSnapshots().catch(() => {}), 150);
  } else if (ev.event === 'SHUTDOWN') { setLink('guest shut down'); }
}

const consolePane = setupConsole(() => state.hmp || { exec: () => Promise.reject(new Error('monitor not connected')) },
  { out: $('hmp-out'), form: $('hmp-form'), input: $('hmp-line') });

let reconnectDelay = 1000;
async function connect() {
  setLink('connecting…');
  const qmp = new Qmp(wsUrl('/qmp'));
  const hmp = new Hmp(wsUrl('/hmp'));
  try {
    const greeting = await qmp.open();
    await hmp.open();
    state.qmp = qmp;
    state.hmp = hmp;
    qmp.onEvent = onEvent;
    const lost = () => {
      state.qmp = null; state.hmp = null; state.running = null;
      renderStatus(); renderSnapshots();
      qmp.close(); hmp.ws && hmp.ws.close();
      setLink('disconnected, retrying…');
      setTimeout(connect, reconnectDelay);
      reconnectDelay = Math.min(reconnectDelay * 2, 15000);
    };
    qmp.onClose = lost;
    hmp.onClose = lost;
    reconnectDelay = 1000;
    const v = greeting.version && greeting.version.qemu;
    setLink(v ? `connected · back end ${v.major}.${v.minor}.${v.micro} ${greeting.version.package || ''}` : 'connected');
    await Promise.all([refreshStatus(), refreshSnapshots()]);
    pollJobs();
  } catch (e) {
    qmp.close();
    if (hmp.ws) hmp.ws.close();
    setLink('not connected');
    showError(`Cannot reach the console (${e.message}). Open the URL that snapgate printed ` +
      '("web console: …/?token=…"): the token may be wrong, or the gateway has stopped.');
    setTimeout(connect, Math.max(reconnectDelay, 5000));
    reconnectDelay = Math.min(reconnectDelay * 2, 15000);
  }
}

renderStatus();
window.sgSerial = startSerial(wsUrl('/serial'), $('serial-term'), $('serial-note'));
connect();

// jobs.js: live progress bars for the back end's jobs, whoever started them
// (this page, the terminal monitor, a QMP script).  A bar follows the job's
// own state from JOB_STATUS_CHANGE events, and its progress from query-jobs
// polled while a job is active; it ends when the job concludes (a failed or
// cancelled job passes through "aborting" first) or disappears from
// query-jobs, so a bar never stays at "running" after its job is over.
import { humanSize } from './snapshots.js';

const POLL_MS = 200;
const CANCELLABLE = new Set(['created', 'running', 'paused', 'ready', 'standby', 'waiting']);
const TYPE_LABEL = { 'snapshot-save': 'Saving', 'snapshot-load': 'Loading', 'snapshot-delete': 'Deleting' };

// The HMP engine's job ids name their command (hmp-savevm-1, hmp-c2-loadvm-3).
function typeFromId(id) {
  const m = /^hmp-(?:c\d+-)?(savevm|loadvm|delvm)-/.exec(id);
  return m ? { savevm: 'snapshot-save', loadvm: 'snapshot-load', delvm: 'snapshot-delete' }[m[1]] : '';
}

export class Jobs {
  constructor(el, hooks) {
    this.el = el;
    this.hooks = hooks;          // {cancel(id), changed(), poll() -> Promise<query-jobs>}
    this.map = new Map();        // id -> job
    this.expected = null;        // {cmd, tag}: the line of ours being run
    this.seq = 0;                // query-jobs requests sent
    this.timer = null;
  }

  active() { return [...this.map.values()].some((j) => j.phase === 'active'); }
  activeJob() { return [...this.map.values()].find((j) => j.phase === 'active') || null; }

  get(id) {
    let j = this.map.get(id);
    if (!j) {
      if (!this.active()) this.clearFinished();
      j = { id, type: '', status: '', cur: 0, total: 0, error: '', phase: 'active', aborted: false,
            cancelAsked: false, mine: false, tag: '', knownAt: this.seq };
      if (this.expected) { j.mine = true; j.tag = this.expected.tag; this.expected.jobs.push(j); }
      this.map.set(id, j);
    }
    return j;
  }

  // A line of ours is about to run: the jobs created until it ends are its own.
  expect(cmd, tag) { this.expected = { cmd, tag, jobs: [] }; }
  wasCancelled() { return !!this.expected && this.expected.jobs.some((j) => j.cancelAsked); }
  lineDone(cmd, ok) {
    const e = this.expected;
    this.expected = null;
    for (const j of e ? e.jobs : []) {
      if (j.phase === 'active') this.finish(j, ok && !j.aborted);
    }
    this.render();
  }

  finish(j, ok) {
    j.phase = ok ? 'done' : j.cancelAsked ? 'cancelled' : 'failed';
  }

  event(data) {
    if (!data.id || !data.status) return;
    // The end of a job this page never saw running (an old one being dismissed).
    if (!this.map.has(data.id) && (data.status === 'concluded' || data.status === 'null')) return;
    const j = this.get(data.id);
    if (!j.type) j.type = typeFromId(data.id);
    j.status = data.status;
    if (data.status === 'aborting') j.aborted = true;
    if (j.phase === 'active' && (data.status === 'concluded' || data.status === 'null')) this.finish(j, !j.aborted);
    this.render();
    this.hooks.changed();
    this.schedule(0);
  }

  async refresh() {
    const seq = ++this.seq;
    let list;
    try { list = await this.hooks.poll(); } catch { return; }
    const seen = new Set();
    for (const q of list || []) {
      if (!q.id) continue;
      seen.add(q.id);
      const known = this.map.has(q.id);
      if (!known && (q.status === 'concluded' || q.status === 'null')) continue; // an old, finished job
      const j = this.get(q.id);
      j.type = q.type || j.type;
      j.status = q.status || j.status;
      j.cur = q['current-progress'] || 0;
      j.total = q['total-progress'] || 0;
      if (q.error) { j.error = q.error; j.aborted = true; }
      if (j.phase === 'active' && q.status === 'concluded') this.finish(j, !j.aborted);
    }
    // Dismissed between two polls (its owner did it): over, whatever we missed.
    for (const j of this.map.values()) {
      if (j.phase === 'active' && !seen.has(j.id) && j.knownAt < seq) this.finish(j, !j.aborted);
    }
    this.render();
    this.hooks.changed();
    this.schedule();
  }

  schedule(ms = POLL_MS) {
    clearTimeout(this.timer);
    if (this.active()) this.timer = setTimeout(() => this.refresh(), ms);
  }

  clearFinished() {
    for (const [id, j] of this.map) {
      if (j.phase !== 'active') {
        if (j.el) j.el.remove();
        this.map.delete(id);
      }
    }
  }

  render() {
    for (const j of this.map.values()) {
      if (!j.el) j.el = this.bar(j);
      const pct = j.phase === 'done' ? 100
        : j.total > 1 ? Math.min(100, Math.round((j.cur * 100) / j.total)) : 0;
      const p = j.el.querySelector('progress');
      if (j.phase !== 'active' && j.phase !== 'done') p.value = p.value || pct; else p.value = pct;
      const name = TYPE_LABEL[j.type] || j.type || 'job';
      j.el.querySelector('.job-name').textContent = j.tag ? `${name} “${j.tag}”` : `${name} (${j.id})`;
      j.el.querySelector('.job-name').title = `job ${j.id}${j.tag ? `, tag ${j.tag}` : ''}`;
      let label;
      if (j.phase === 'done') label = 'completed · 100%';
      else if (j.phase === 'cancelled') label = 'cancelled';
      else if (j.phase === 'failed') label = j.error ? `failed: ${j.error}` : 'failed';
      else if (j.cancelAsked) label = `cancelling… (${j.status})`;
      else if (j.total > 1) label = `${j.status} · ${pct}% (${humanSize(j.cur)} of ${humanSize(j.total)})`;
      else label = j.status || 'starting';
      j.el.querySelector('.job-state').textContent = label;
      j.el.dataset.state = j.phase === 'active' ? 'running' : j.phase;
      const c = j.el.querySelector('button');
      c.hidden = j.phase !== 'active';
      c.disabled = j.cancelAsked || !CANCELLABLE.has(j.status || 'created');
    }
  }

  bar(j) {
    const el = document.createElement('div');
    el.className = 'job';
    el.dataset.job = j.id;
    const name = document.createElement('span');
    name.className = 'job-name';
    const st = document.createElement('span');
    st.className = 'job-state';
    const cancel = document.createElement('button');
    cancel.type = 'button';
    cancel.className = 'job-cancel';
    cancel.textContent = 'Cancel';
    cancel.setAttribute('aria-label', `Cancel job ${j.id}`);
    cancel.addEventListener('click', () => {
      j.cancelAsked = true;
      this.render();
      this.hooks.cancel(j.id);
    });
    const p = document.createElement('progress');
    p.max = 100;
    p.value = 0;
    p.setAttribute('aria-label', `progress of ${j.id}`);
    el.append(name, st, cancel, p);
    this.el.append(el);
    return el;
  }
}

// hmp.js: the /hmp WebSocket: one command line per frame, one text reply per
// line, in order.  Also the HMP console pane with its history.

export class Hmp {
  constructor(url) {
    this.url = url;
    this.queue = [];
    this.ws = null;
    this.onClose = () => {};
  }

  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, 'hmp');
      this.ws = ws;
      let opened = false;
      ws.onopen = () => { opened = true; resolve(); };
      ws.onmessage = (ev) => {
        const p = this.queue.shift();
        if (p) p.resolve(typeof ev.data === 'string' ? ev.data : '');
      };
      ws.onclose = (ev) => {
        for (const p of this.queue) p.reject(new Error('monitor connection closed'));
        this.queue = [];
        if (!opened) reject(new Error(`cannot open /hmp (code ${ev.code})`));
        else this.onClose(ev);
      };
      ws.onerror = () => {};
    });
  }

  exec(line) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN)
      return Promise.reject(new Error('monitor not connected'));
    return new Promise((resolve, reject) => {
      this.queue.push({ resolve, reject });
      this.ws.send(line);
    });
  }
}

// HMP prints failures as "Error: ..." (QEMU style); anything else is output.
export function hmpError(text) {
  const m = /^Error: .*$/m.exec(text || '');
  return m ? m[0] : null;
}

export function setupConsole(hmpRef, els) {
  const history = [];
  let pos = 0, draft = '';
  const append = (text, cls) => {
    const span = document.createElement('span');
    if (cls) span.className = cls;
    span.textContent = text;
    els.out.append(span);
    els.out.scrollTop = els.out.scrollHeight;
  };
  els.form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    const line = els.input.value.trim();
    els.input.value = '';
    if (!line) return;
    if (history[history.length - 1] !== line) history.push(line);
    pos = history.length;
    draft = '';
    append(`(snapgate) ${line}\n`, 'cmd');
    try {
      const reply = await hmpRef().exec(line);
      if (reply) append(reply.endsWith('\n') ? reply : reply + '\n', hmpError(reply) ? 'err' : '');
    } catch (e) {
      append(`${e.message}\n`, 'err');
    }
  });
  els.input.addEventListener('keydown', (ev) => {
    if (ev.key === 'ArrowUp' && pos > 0) {
      if (pos === history.length) draft = els.input.value;
      els.input.value = history[--pos];
    } else if (ev.key === 'ArrowDown' && pos < history.length) {
      pos++;
      els.input.value = pos === history.length ? draft : history[pos];
    } else {
      return;
    }
    ev.preventDefault();
    const n = els.input.value.length;
    els.input.setSelectionRange(n, n);
  });
  return { append };
}

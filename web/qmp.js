// qmp.js: QMP over the /qmp WebSocket (one JSON message per frame).
// Commands get their own ids so replies are matched even when events interleave.

export class Qmp {
  constructor(url) {
    this.url = url;
    this.seq = 0;
    this.pending = new Map();
    this.onEvent = () => {};
    this.onClose = () => {};
    this.ws = null;
  }

  // Resolves with the greeting once capabilities are negotiated.
  open() {
    return new Promise((resolve, reject) => {
      const ws = new WebSocket(this.url, 'qmp');
      this.ws = ws;
      let greeted = false;
      ws.onmessage = (ev) => {
        let msg;
        try { msg = JSON.parse(ev.data); } catch { return; }
        if (!greeted && msg.QMP) {
          greeted = true;
          this.cmd('qmp_capabilities').then(() => resolve(msg.QMP), reject);
          return;
        }
        if (msg.event) { this.onEvent(msg); return; }
        const p = this.pending.get(msg.id);
        if (!p) return;
        this.pending.delete(msg.id);
        if (msg.error) p.reject(new QmpError(msg.error.class, msg.error.desc));
        else p.resolve(msg.return);
      };
      ws.onclose = (ev) => {
        for (const p of this.pending.values()) p.reject(new QmpError('Disconnected', 'connection closed'));
        this.pending.clear();
        if (!greeted) reject(new QmpError('Disconnected', `cannot open /qmp (code ${ev.code})`));
        else this.onClose(ev);
      };
      ws.onerror = () => {};
    });
  }

  cmd(execute, args) {
    if (!this.ws || this.ws.readyState !== WebSocket.OPEN)
      return Promise.reject(new QmpError('Disconnected', 'not connected'));
    const id = `web-${++this.seq}`;
    const msg = { execute, id };
    if (args) msg.arguments = args;
    return new Promise((resolve, reject) => {
      this.pending.set(id, { resolve, reject });
      this.ws.send(JSON.stringify(msg));
    });
  }

  close() { if (this.ws) this.ws.close(); }
}

export class QmpError extends Error {
  constructor(cls, desc) { super(desc); this.cls = cls; }
}

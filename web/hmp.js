// hmp.js: the /hmp WebSocket (one command line per frame, its whole reply
// per frame, in order) and the HMP pane: history with ↑/↓, Tab completion by
// the gateway's HMP engine (x-snapgate-hmp-complete, the terminal's own
// completion), and a confirmation before `quit`.

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
        const why = ev.reason ? `monitor connection closed: ${ev.reason}` : 'monitor connection closed';
        for (const p of this.queue) p.reject(new Error(why));
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

  close() { if (this.ws) this.ws.close(); }
}

// HMP prints failures as "Error: ..." (QEMU style).  The whole reply from the
// first such line on is the error (later lines explain it), never cut.
export function hmpError(text) {
  const t = text || '';
  const m = /^Error: /m.exec(t);
  return m ? t.slice(m.index).replace(/\s+$/, '') : null;
}

// A tag as one HMP argument: QEMU's quoting (get_str) with \" \\ \n \r, so a
// tag with spaces, quotes or backslashes names exactly that snapshot.
export function hmpQuote(tag) {
  return `"${tag.replace(/[\\"]/g, (c) => `\\${c}`).replace(/\n/g, '\\n').replace(/\r/g, '\\r')}"`;
}

function commonPrefix(list) {
  if (!list.length) return '';
  let p = list[0];
  for (const s of list) while (!s.startsWith(p)) p = p.slice(0, -1);
  return p;
}

const QUIT = /^\s*(quit|q)\s*$/;

export function setupConsole(hmpRef, qmpRef, els, confirmThen) {
  const history = [];
  let pos = 0, draft = '';
  const append = (text, cls) => {
    const span = document.createElement('span');
    if (cls) span.className = cls;
    span.textContent = text;
    els.out.append(span);
    els.out.scrollTop = els.out.scrollHeight;
  };
  const run = async (line) => {
    append(`(snapgate) ${line}\n`, 'cmd');
    try {
      const reply = await hmpRef().exec(line);
      if (reply) append(reply.endsWith('\n') ? reply : reply + '\n', hmpError(reply) ? 'err' : '');
    } catch (e) {
      append(`${e.message}\n`, 'err');
    }
  };
  els.form.addEventListener('submit', (ev) => {
    ev.preventDefault();
    const line = els.input.value.trim();
    els.input.value = '';
    if (!line) return;
    if (history[history.length - 1] !== line) history.push(line);
    pos = history.length;
    draft = '';
    if (QUIT.test(line)) {
      confirmThen('Quit', '“quit” stops the virtual machine and the gateway, as QEMU\'s quit does. ' +
        'Unsaved guest state is lost.', 'Quit', () => run(line));
      return;
    }
    run(line);
  });

  // Tab: the engine's candidates for the word before the cursor (words end at
  // spaces and tabs, as in the terminal).  One candidate completes it with a
  // space after it; several complete their common prefix and are listed.
  let lastTab = { line: null, at: 0 };
  const complete = async () => {
    const qmp = qmpRef();
    if (!qmp) return;
    const at = els.input.selectionStart ?? els.input.value.length;
    const before = els.input.value.slice(0, at), after = els.input.value.slice(at);
    let r;
    try { r = await qmp.cmd('x-snapgate-hmp-complete', { line: before }); } catch (e) {
      append(`completion: ${e.message}\n`, 'err');
      return;
    }
    if (els.input.value.slice(0, at) !== before) return;   // typed on meanwhile
    const word = r.word || '';
    const cands = r.candidates || [];
    if (!cands.length) return;
    const stem = before.slice(0, before.length - word.length);
    let ins = cands.length === 1 ? `${cands[0]} ` : commonPrefix(cands);
    if (ins.length < word.length) ins = word;
    const value = stem + ins + after;
    els.input.value = value;
    const caret = stem.length + ins.length;
    els.input.setSelectionRange(caret, caret);
    if (cands.length > 1 && (ins === word || (lastTab.line === value && Date.now() - lastTab.at < 3000))) {
      append(`${cands.join('  ')}\n`, 'cands');
    }
    lastTab = { line: value, at: Date.now() };
  };

  els.input.addEventListener('keydown', (ev) => {
    // On an empty line Tab moves the focus on, so the keyboard never gets stuck here.
    if (ev.key === 'Tab' && els.input.value && !ev.shiftKey && !ev.altKey && !ev.ctrlKey && !ev.metaKey) {
      ev.preventDefault();
      complete();
      return;
    }
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

// serial.js: the guest's UART in xterm.js over the /serial WebSocket
// (binary frames both ways).
import { Terminal } from './node_modules/@xterm/xterm/lib/xterm.mjs';
import { FitAddon } from './node_modules/@xterm/addon-fit/lib/addon-fit.mjs';

export function startSerial(url, el, note, haveToken) {
  const term = new Terminal({
    convertEol: false, cursorBlink: true, scrollback: 5000, fontSize: 13,
    fontFamily: 'ui-monospace, "DejaVu Sans Mono", monospace',
  });
  const fit = new FitAddon();
  term.loadAddon(fit);
  term.open(el);
  const refit = () => { try { fit.fit(); } catch { /* hidden: no size yet */ } };
  new ResizeObserver(refit).observe(el);
  refit();

  const enc = new TextEncoder();
  let ws = null, opened = false, retry = 1000;
  const connect = () => {
    ws = new WebSocket(url, 'serial');
    ws.binaryType = 'arraybuffer';
    ws.onopen = () => { opened = true; retry = 1000; note.hidden = true; };
    ws.onmessage = (ev) => {
      term.write(typeof ev.data === 'string' ? ev.data : new Uint8Array(ev.data));
    };
    ws.onclose = () => {
      if (!opened) {
        // Refused at upgrade (the browser does not say why): without a token
        // every socket is refused; with one, /serial exists only when the back
        // end is the bundled VMM.
        note.textContent = 'No serial console: the back end is not the bundled VMM (or the token was refused).';
        note.hidden = false;
        return;
      }
      note.textContent = 'Serial console disconnected; reconnecting…';
      note.hidden = false;
      setTimeout(connect, retry);
      retry = Math.min(retry * 2, 10000);
    };
    ws.onerror = () => {};
  };
  term.onData((d) => { if (ws && ws.readyState === WebSocket.OPEN) ws.send(enc.encode(d)); });
  if (haveToken) {
    connect();
  } else {
    // Every socket would be refused: say why instead of trying.
    note.textContent = 'No serial console: this page was opened without the token. Open the address snapgate printed ("web console: …/?token=…").';
    note.hidden = false;
  }
  return term;
}

// snapshots.js: builds the VM snapshot list from query-block and
// query-named-block-nodes, the way an operator reads it: one row per tag,
// with the ID, VM size and clock taken from the disk that holds the VM state.

// Writable root disks in drive order; the first one receives the VM state
// (INTERFACES.md section 3, unless --vmstate-node says otherwise).
export function disksOf(queryBlock, namedNodes) {
  const byNode = new Map();
  for (const n of namedNodes || []) if (n['node-name']) byNode.set(n['node-name'], n);
  const disks = [];
  for (const dev of queryBlock || []) {
    const ins = dev.inserted;
    if (!ins) continue;
    const node = ins['node-name'] || dev.device;
    const named = byNode.get(node);
    const image = (named && named.image) || ins.image || {};
    disks.push({
      device: dev.device || dev.qdev || node,
      node,
      ro: !!ins.ro,
      format: image.format || ins.drv,
      snapshots: image.snapshots || [],
    });
  }
  return disks;
}

export function buildRows(disks) {
  const writable = disks.filter((d) => !d.ro);
  const vmstate = writable[0];
  const rows = new Map();
  for (const d of writable) {
    for (const s of d.snapshots) {
      let r = rows.get(s.name);
      if (!r) {
        r = { tag: s.name, perDisk: new Map(), dup: false };
        rows.set(s.name, r);
      }
      if (r.perDisk.has(d.node)) r.dup = true;   // QEMU can create duplicate tags
      else r.perDisk.set(d.node, s);
    }
  }
  const out = [];
  for (const r of rows.values()) {
    const main = (vmstate && r.perDisk.get(vmstate.node)) || r.perDisk.values().next().value;
    const missing = writable.filter((d) => !r.perDisk.has(d.node)).map((d) => d.device);
    out.push({
      tag: r.tag,
      id: vmstate && r.perDisk.has(vmstate.node) ? main.id : '',
      vmSize: main['vm-state-size'] || 0,
      withRam: !!(vmstate && r.perDisk.has(vmstate.node) && main['vm-state-size'] > 0),
      date: (main['date-sec'] || 0) * 1000 + Math.floor((main['date-nsec'] || 0) / 1e6),
      clockNs: (main['vm-clock-sec'] || 0) * 1e9 + (main['vm-clock-nsec'] || 0),
      partial: missing.length > 0,
      missing,
      duplicate: r.dup,
    });
  }
  out.sort((a, b) => a.date - b.date || a.tag.localeCompare(b.tag));
  return out;
}

export function humanSize(bytes) {
  if (!bytes) return '0 B';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0, v = bytes;
  while (v >= 1024 && i < units.length - 1) { v /= 1024; i++; }
  return `${i === 0 ? v : v.toFixed(v < 10 ? 2 : 1)} ${units[i]}`;
}

const pad = (n, w = 2) => String(n).padStart(w, '0');

export function formatDate(ms) {
  if (!ms) return '';
  const d = new Date(ms);
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
         `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
}

export function formatClock(ns) {
  const ms = Math.floor(ns / 1e6);
  const h = Math.floor(ms / 3600000), m = Math.floor(ms / 60000) % 60;
  const s = Math.floor(ms / 1000) % 60;
  return `${pad(h)}:${pad(m)}:${pad(s)}.${pad(ms % 1000, 3)}`;
}

export function defaultTag(existing, now = new Date()) {
  const base = `vm-${now.getFullYear()}${pad(now.getMonth() + 1)}${pad(now.getDate())}` +
               `${pad(now.getHours())}${pad(now.getMinutes())}${pad(now.getSeconds())}`;
  let tag = base;
  for (let i = 2; existing.has(tag); i++) tag = `${base}-${i}`;
  return tag;
}

// QEMU keeps a snapshot name in 256 bytes with its NUL (INTERFACES.md 7: one
// limit, checked up front, never cut): at most 255 bytes of UTF-8.
export const TAG_MAX_BYTES = 255;

// Why a tag cannot be taken as typed, or null.  Spaces, quotes and
// backslashes are fine (the line quotes the tag); control characters are not.
export function tagProblem(tag) {
  if (!tag.trim()) return 'Type a tag for the snapshot.';
  const bytes = new TextEncoder().encode(tag).length;
  if (bytes > TAG_MAX_BYTES) return `The tag is ${bytes} bytes of UTF-8; at most ${TAG_MAX_BYTES} fit.`;
  if (/[\u0000-\u001f\u007f]/.test(tag)) return 'A tag cannot contain control characters (tabs, new lines).';
  return null;
}

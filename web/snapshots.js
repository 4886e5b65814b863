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

// The snapshot tree (x-snapgate-query-snapshot-tree: each snapshot's parent
// by ID on the VM-state disk, and the current position), drawn as libvirt's
// snapshot-list --tree and Proxmox's "NOW" do: rows in depth-first order,
// children under their parent by date, each with the guide to draw before
// its tag ("├─ ", "└─ ", "│  ") and its depth; a pseudo-row {now: true} as
// the last child of the current snapshot.  Without a tree (QEMU 7.2 back end,
// an older VMM) the rows stay as they are, flat, with no NOW.
export const TREE_MAX_GUIDES = 6;   // deeper levels are drawn as "⋯ " (a chain of 50 saves stays readable)

export function treeRows(rows, tree) {
  const flat = rows.map((r) => ({ ...r, depth: 0, guide: '', parent: null }));
  if (!tree || !Array.isArray(tree.snapshots)) return flat;
  const parentOfId = new Map(tree.snapshots.map((s) => [s.id, s.parent || null]));
  const byId = new Map(flat.filter((r) => r.id).map((r) => [r.id, r]));
  const kids = new Map();   // parent ID ('' for roots) -> children in row (date) order
  const add = (key, node) => { if (!kids.has(key)) kids.set(key, []); kids.get(key).push(node); };
  for (const r of flat) {
    const p = r.id ? parentOfId.get(r.id) : null;
    r.parent = p && byId.has(p) && p !== r.id ? p : null;
    add(r.parent || '', r);
  }
  const cur = tree.current && byId.has(tree.current) ? tree.current : null;
  if (cur) add(cur, { now: true, tag: 'NOW', parent: cur });
  const out = [];
  const seen = new Set();
  const walk = (node, depth, trail, last) => {
    if (!node.now) {
      if (seen.has(node.id || node.tag)) return;
      seen.add(node.id || node.tag);
    }
    const levels = trail.map((more) => (more ? '│  ' : '   '));
    const cut = levels.length > TREE_MAX_GUIDES ? ['⋯  ', ...levels.slice(-TREE_MAX_GUIDES + 1)] : levels;
    node.depth = depth;
    node.guide = depth ? `${cut.join('')}${last ? '└─ ' : '├─ '}` : '';
    out.push(node);
    const ch = node.now ? [] : (kids.get(node.id) || []);
    ch.forEach((c, i) => walk(c, depth + 1, depth ? [...trail, !last] : [], i === ch.length - 1));
  };
  const roots = kids.get('') || [];
  roots.forEach((r) => walk(r, 0, [], true));
  // A cycle (never written by snapgate, but the headers are data): the rest flat.
  for (const r of flat) if (!seen.has(r.id || r.tag)) walk({ ...r, parent: null }, 0, [], true);
  return out;
}

// The filesync page: renders what /api/live pushes (the status when it changes, each
// event as it happens) and sends the buttons' actions to /api/action. No framework; every
// text from the daemon goes into the page as text, never as HTML.

const $ = (id) => document.getElementById(id);

// el("p", {class: "x"}, "text", child…): a new element.
function el(tag, attrs = {}, ...children) {
  const node = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
    else node.setAttribute(k, v === true ? "" : v);
  }
  for (const c of children.flat()) {
    if (c !== undefined && c !== null && c !== false) node.append(c);
  }
  return node;
}

function bytes(n) {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

function duration(secs) {
  if (secs < 60) return `${Math.max(1, Math.round(secs))} s`;
  if (secs < 3600) return `${Math.round(secs / 60)} min`;
  if (secs < 86400) return `${(secs / 3600).toFixed(1)} h`;
  return `${Math.round(secs / 86400)} days`;
}

function ago(unixSecs) {
  if (!unixSecs) return "never";
  const secs = Date.now() / 1000 - unixSecs;
  return secs < 5 ? "just now" : `${duration(secs)} ago`;
}

const when = (unixSecs) => new Date(unixSecs * 1000).toLocaleString();

function toast(text) {
  const t = $("toast");
  t.textContent = text;
  t.classList.add("show");
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => t.classList.remove("show"), 6000);
}

async function get(path) {
  const r = await fetch(path, { credentials: "same-origin" });
  if (r.status === 401) { location.reload(); throw new Error("logged out"); }
  if (!r.ok) throw new Error(await r.text());
  return r.json();
}

// Sends one action; says what the daemon answered.
async function act(action) {
  try {
    const r = await fetch("/api/action", {
      method: "POST",
      credentials: "same-origin",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify(action),
    });
    const text = await r.text();
    let answer;
    try { answer = JSON.parse(text); } catch { answer = { ok: false, message: text }; }
    toast(answer.message || (answer.ok ? "Done." : "Failed."));
    return answer;
  } catch (e) {
    toast(`Cannot reach filesyncd: ${e.message}`);
    return { ok: false };
  }
}

const STATES = {
  idle: "Up to date",
  syncing: "Syncing",
  scanning: "Scanning",
  paused: "Paused",
  offline: "Offline: the server cannot be reached",
  error: "Error",
  held: "Deletes held back",
};

// The largest pending count seen since the folder last had nothing pending, each way,
// so that a bar can show how much of it is done.
const peaks = new Map();

function bar(label, key, files, bytesLeft, rate) {
  const peak = Math.max(peaks.get(key) || 0, files);
  peaks.set(key, files ? peak : 0);
  if (!files) return null;
  const left = rate > 0 ? `, about ${duration(bytesLeft / rate)} left at ${bytes(rate)}/s` : "";
  const text = `${label}: ${files} ${files === 1 ? "file" : "files"}, ${bytes(bytesLeft)}${left}`;
  return el("div", { class: "bar" },
    el("span", {}, text),
    el("progress", { max: peak, value: peak - files, "aria-label": text }));
}

function folderCard(f) {
  const name = f.name;
  const paused = f.state === "paused";
  return el("article", { class: "folder", "data-folder": name, "data-state": f.state, "aria-label": `folder ${name}` },
    el("div", { class: "row" },
      el("h3", {}, name),
      el("span", { class: `state ${f.state}` }, STATES[f.state] || f.state)),
    el("p", { class: "meta" }, f.path),
    el("p", { class: "meta" },
      el("span", { class: f.connected ? "dot on" : "dot", "aria-hidden": "true" }),
      `${f.connected ? "connected to" : "not connected to"} ${f.server} · ${f.mode} · ${f.files} files, ${bytes(f.bytes)}`),
    el("p", { class: "meta" }, `Last in sync: ${ago(f.last_sync)}`),
    bar("To send", `${name}/up`, f.pending_up_files, f.pending_up_bytes, f.rate_up_bps),
    bar("To receive", `${name}/down`, f.pending_down_files, f.pending_down_bytes, f.rate_down_bps),
    f.last_error && el("p", { class: "problem" }, `Last error: ${f.last_error}`),
    f.watch_problem && el("p", { class: "meta" }, f.watch_problem),
    f.state === "held" && el("p", { class: "problem" },
      "Those deletes wait until you say they are meant; other changes still sync."),
    f.state === "held" && twoStep(`held ${name}`, `Send the deletes of ${name}`,
      `Really delete them on every device?`, () => act({ do: "send-held-deletes", folder: name })),
    f.conflicts > 0 && el("p", { class: "meta" }, `${f.conflicts} ${f.conflicts === 1 ? "conflict" : "conflicts"}, listed below`),
    f.unsyncable.length > 0 && el("details", {},
      el("summary", {}, `${f.unsyncable.length} paths cannot be synced`),
      el("ul", {}, f.unsyncable.map((u) => el("li", {}, `${u.path}: ${u.reason}`)))),
    el("div", { class: "actions" },
      el("button", { type: "button", onclick: () => act({ do: paused ? "resume" : "pause", folder: name }) },
        paused ? `Resume ${name}` : `Pause ${name}`),
      el("button", { type: "button", onclick: () => act({ do: "rescan", folder: name }) }, `Rescan ${name}`)));
}

let last = null;

function renderStatus(s) {
  const previous = last;
  last = s;
  $("daemon").textContent = `filesyncd ${s.version} · device ${s.device}`;
  $("folders").replaceChildren(s.folders.length
    ? el("div", { class: "grid" }, s.folders.map(folderCard))
    : el("p", { class: "quiet" }, "No folders yet. Add one with: filesyncctl add PATH --server HOST:PORT"));
  const select = $("versions-folder");
  const chosen = select.value;
  select.replaceChildren(...s.folders.map((f) => el("option", { value: f.name, selected: f.name === chosen }, f.name)));
  const conflicts = (x) => x ? x.folders.reduce((n, f) => n + f.conflicts, 0) : -1;
  if (conflicts(previous) !== conflicts(s)) loadConflicts();
  $("server").hidden = !s.server;
  // A server that syncs no folder of its own shows only its server part.
  const noFolders = s.folders.length === 0;
  $("folders-section").hidden = noFolders && !!s.server;
  $("conflicts-section").hidden = noFolders;
  $("versions-section").hidden = noFolders;
  if (s.server && JSON.stringify(s.server) !== JSON.stringify(previous?.server)) loadServer();
}

async function loadConflicts() {
  const list = (await get("/api/conflicts")).Conflicts;
  if (!list.length) {
    $("conflicts").replaceChildren(el("p", { class: "quiet" }, "None."));
    return;
  }
  const keep = (c, keep, label) => el("button", {
    type: "button",
    onclick: () => act({ do: "resolve", folder: c.folder, path: c.path, keep }),
  }, label);
  $("conflicts").replaceChildren(el("div", { class: "table" }, el("table", {},
    el("thead", {}, el("tr", {}, ["Folder", "File", "Their version", "Your version", "Since", "Keep"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, list.map((c) => el("tr", { "data-conflict": c.path },
      el("td", {}, c.folder), el("td", {}, c.path),
      el("td", {}, `at ${c.path}, from ${c.winner}`),
      el("td", {}, `in ${c.copy} (${bytes(c.copy_size)})`),
      el("td", {}, ago(c.made_at)),
      el("td", { class: "actions" }, keep(c, "local", "Keep mine"), keep(c, "remote", "Keep theirs"), keep(c, "newer", "Keep newer"))))))));
}

async function showVersions(folder, path) {
  const query = new URLSearchParams({ folder, path });
  let list;
  try {
    list = (await get(`/api/versions?${query}`)).Versions;
  } catch (e) {
    $("versions").replaceChildren(el("p", { class: "problem" }, e.message));
    return;
  }
  if (!list.length) {
    $("versions").replaceChildren(el("p", { class: "quiet" }, `The server keeps no earlier version of ${path}.`));
    return;
  }
  $("versions").replaceChildren(el("div", { class: "table" }, el("table", {},
    el("thead", {}, el("tr", {}, ["Version", "Size", "Modified", "Replaced", ""].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, list.map((v) => el("tr", { "data-version": v.version },
      el("td", {}, String(v.version)), el("td", {}, bytes(v.size)),
      el("td", {}, when(v.mtime_ns / 1e9)), el("td", {}, when(v.kept_at)),
      el("td", {}, el("button", {
        type: "button",
        onclick: async () => { await act({ do: "restore", folder, path, version: v.version }); showVersions(folder, path); },
      }, `Restore version ${v.version}`))))))));
}

// A destructive button acts on its second press: the first asks, in its own label.
// What was asked survives the redraws that live updates make.
const asked = new Set();

function twoStep(key, label, question, run) {
  return el("button", {
    type: "button",
    onclick: (e) => {
      if (asked.has(key)) { asked.delete(key); run(); return; }
      asked.add(key);
      e.target.textContent = question;
    },
  }, asked.has(key) ? question : label);
}

function usage(used, quota) {
  const text = quota ? `${bytes(used)} of ${bytes(quota)}` : `${bytes(used)}, no quota`;
  return el("div", { class: "bar" }, el("span", {}, text),
    quota ? el("meter", { min: 0, max: quota, value: used, high: quota * 0.9, "aria-label": text }) : null);
}

async function loadServer() {
  const s = last.server;
  $("server-summary").replaceChildren(
    el("p", { class: "meta" }, `Listening on ${s.listen} · registration ${s.registration} · ${s.devices.length} connections`),
    el("p", { class: "meta" }, `Certificate SHA-256 ${s.fingerprint}`),
    s.free_bytes !== null && el("p", { class: "meta" }, `${bytes(s.free_bytes)} free in ${s.data_dir}`),
    s.folder_problems.map((p) => el("p", { class: "problem" }, `${p.account}/${p.name}: ${p.error}`)));
  $("server-folders").replaceChildren(s.folders.length ? el("div", { class: "table" }, el("table", {},
    el("thead", {}, el("tr", {}, ["Account", "Folder", "Files", "Size"].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, s.folders.map((f) => el("tr", {},
      el("td", {}, f.account), el("td", {}, f.name), el("td", {}, String(f.files)), el("td", {}, bytes(f.bytes))))))) :
    el("p", { class: "quiet" }, "None yet."));
  const all = await get("/api/server");
  const accounts = all.accounts.Accounts;
  $("accounts").replaceChildren(accounts.length ? el("div", { class: "table" }, el("table", {},
    el("thead", {}, el("tr", {}, ["Account", "Device", "Last seen", "Connected", ""].map((h) => el("th", { scope: "col" }, h)))),
    el("tbody", {}, accounts.flatMap((a) => [
      el("tr", {}, el("th", { scope: "row", colspan: 5 }, a.account, usage(a.used, a.quota))),
      ...a.devices.map((d) => el("tr", { "data-device": d.device },
        el("td", {}, a.account), el("td", {}, `${d.name} (${d.device})`),
        el("td", {}, ago(d.last_seen)),
        el("td", {}, d.revoked ? "revoked" : d.connections ? `yes (${d.connections})` : "no"),
        el("td", {}, d.revoked ? "" : twoStep(`revoke ${d.device}`, `Revoke ${d.name}`,
          `Really revoke ${d.name}? It is refused from then on`,
          () => act({ do: "revoke", device: d.device }).then(loadServer))))),
    ])))) : el("p", { class: "quiet" }, "No accounts yet."));
  const invites = all.invites.Invites;
  $("invites").replaceChildren(invites.length ? el("ul", {}, invites.map((i) => el("li", {},
    `${i.id} for ${i.account}, by ${i.made_by}, expires ${when(i.expires)} `,
    el("button", {
      type: "button",
      onclick: () => act({ do: "cancel-invite", id: i.id }).then(() => { $("new-invite").replaceChildren(); loadServer(); }),
    }, `Cancel invite ${i.id}`)))) :
    el("p", { class: "quiet" }, "None."));
  const shares = all.shares.Shares;
  $("shares").replaceChildren(shares.length ? el("ul", {}, shares.map((g) => el("li", {},
    `${g.owner}/${g.folder} shared with ${g.member}${g.read_only ? " (read-only)" : ""}`))) :
    el("p", { class: "quiet" }, "None."));
}

function addEvent(e) {
  const list = $("events");
  const time = new Date(e.time_ms);
  const text = [e.folder, e.kind, e.path, e.detail].filter(Boolean).join(" · ");
  list.prepend(el("li", { class: `kind-${e.kind}` },
    el("time", { datetime: time.toISOString() }, time.toLocaleTimeString()), text));
  while (list.children.length > 200) list.lastChild.remove();
}

function connect() {
  const live = new EventSource("/api/live");
  const link = $("link");
  live.addEventListener("open", () => { link.textContent = "live"; link.classList.add("live"); });
  live.addEventListener("status", (m) => renderStatus(JSON.parse(m.data)));
  live.addEventListener("event", (m) => addEvent(JSON.parse(m.data)));
  live.addEventListener("missed", (m) => toast(JSON.parse(m.data)));
  live.addEventListener("error", () => {
    link.textContent = "reconnecting to filesyncd…";
    link.classList.remove("live");
    // A stream refused for want of a session will not come back: show how to log in.
    fetch("/api/status").then((r) => { if (r.status === 401) location.reload(); }, () => {});
  });
}

for (const button of document.querySelectorAll("button[data-do]")) {
  button.addEventListener("click", () => act({ do: button.dataset.do, folder: null }));
}
$("versions-form").addEventListener("submit", (e) => {
  e.preventDefault();
  showVersions($("versions-folder").value, $("versions-path").value.trim());
});
$("invite-form").addEventListener("submit", async (e) => {
  e.preventDefault();
  const answer = await act({ do: "invite", account: $("invite-account").value.trim() });
  if (answer.ok) {
    $("new-invite").replaceChildren("New invite token (give it to the device; shown once): ", el("code", {}, answer.message));
    loadServer();
  }
});
connect();

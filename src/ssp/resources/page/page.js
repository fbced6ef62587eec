// The results page (ssp.reporting.page writes its data). No framework and nothing fetched: data
// come as <script> files calling SSP.index / SSP.video, which work from file:// where fetch does not.
// State lives in the URL hash (#sort=diff&dir=desc&cls=dog, #video=<id>), so every view is a link.
"use strict";
(function () {
  const errors = [];
  function fail(message) {
    errors.push(String(message));
    document.documentElement.dataset.errors = errors.join(" | ");
    let box = document.getElementById("errors");
    if (!box) {
      box = document.createElement("div");
      box.id = "errors";
      box.className = "errors";
      document.body.prepend(box);
    }
    box.textContent = "Problems on this page: " + errors.join("; ");
  }
  window.addEventListener("error", (e) => fail(e.message || ("cannot load " + (e.target && (e.target.src || e.target.href)))), true);
  window.addEventListener("unhandledrejection", (e) => fail(e.reason));

  const el = (tag, attrs, ...children) => {
    const node = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === null || v === undefined) continue;
      if (k === "text") node.textContent = v;
      else if (k.startsWith("on")) node.addEventListener(k.slice(2), v);
      else node.setAttribute(k, v);
    }
    for (const c of children) if (c !== null && c !== undefined) node.append(c);
    return node;
  };
  const put = (node, ...children) => node.replaceChildren(...children.filter((c) => c !== null && c !== undefined));
  const fmt = (x) => (x === null || x === undefined ? "–" : (100 * x).toFixed(1));
  const state = () => Object.fromEntries(new URLSearchParams(location.hash.slice(1)));
  const go = (changes) => {
    const s = Object.assign(state(), changes);
    for (const k of Object.keys(s)) if (s[k] === "" || s[k] === null || s[k] === undefined) delete s[k];
    location.hash = new URLSearchParams(s).toString();
  };

  let INDEX = null;
  const videos = {};          // id -> data of its view, once loaded
  let player = null;

  function value(v, key) {
    if (key === "id" || key === "subset") return v[key];
    if (key === "diff") return v.diff;
    const [variant, metric] = key.split(":");
    return v.scores[variant] ? v.scores[variant][metric] : null;
  }

  function renderIndex(s) {
    const main = document.getElementById("main");
    const t0 = performance.now();
    const classes = [...new Set(INDEX.videos.flatMap((v) => v.classes))].sort();
    const subsets = [...new Set(INDEX.videos.map((v) => v.subset))].sort();
    const sortKey = s.sort === "diff" && !INDEX.compare ? "id" : (s.sort || (INDEX.compare ? "diff" : "id"));
    const dir = s.dir || (sortKey === "id" || sortKey === "subset" ? "asc" : "desc");
    const q = (s.q || "").toLowerCase();
    let rows = INDEX.videos.filter((v) => (!s.cls || v.classes.includes(s.cls)) && (!s.subset || v.subset === s.subset)
      && (!q || v.id.toLowerCase().includes(q)));
    rows.sort((a, b) => {
      const x = value(a, sortKey), y = value(b, sortKey);
      if (x === y) return a.id < b.id ? -1 : 1;
      if (x === null || x === undefined) return 1;     // no score: last either way
      if (y === null || y === undefined) return -1;
      return (x < y ? -1 : 1) * (dir === "asc" ? 1 : -1);
    });
    const controls = el("div", { class: "controls" },
      el("input", { type: "search", placeholder: "video id", value: s.q || "", onchange: (e) => go({ q: e.target.value }) }),
      el("select", { onchange: (e) => go({ cls: e.target.value }), "aria-label": "class" },
        el("option", { value: "", text: "every class" }),
        ...classes.map((c) => el("option", { value: c, text: c, selected: c === s.cls ? "" : null }))),
      el("select", { onchange: (e) => go({ subset: e.target.value }), "aria-label": "setting" },
        el("option", { value: "", text: "every setting" }),
        ...subsets.map((c) => el("option", { value: c, text: c, selected: c === s.subset ? "" : null }))),
      INDEX.compare ? el("button", { onclick: () => go({ sort: "diff", dir: "desc" }), text: `where ${INDEX.compare[0]} helps most` }) : null,
      INDEX.compare ? el("button", { onclick: () => go({ sort: "diff", dir: "asc" }), text: `where it hurts most` }) : null,
      el("span", { text: `${rows.length} of ${INDEX.videos.length} videos` }));
    const head = [["", null], ["video", "id"], ["setting", "subset"], ["classes", null]];
    if (INDEX.scored) {
      for (const v of INDEX.variants) head.push([`${v} mIoU`, `${v}:miou`], [`${v} F`, `${v}:fscore`]);
      if (INDEX.compare) head.push([`Δ mIoU ${INDEX.compare[0]} − ${INDEX.compare[1]}`, "diff"]);
    }
    const thead = el("tr", {}, ...head.map(([label, key]) => el("th", {
      class: key === "id" ? "id" : null, "data-key": key,
      text: label + (key && key === sortKey ? (dir === "asc" ? " ▲" : " ▼") : ""),
      onclick: key ? () => go({ sort: key, dir: key === sortKey && dir === "desc" ? "asc" : "desc" }) : null,
    })));
    const body = el("tbody", {});
    for (const v of rows) {
      const link = "#" + new URLSearchParams({ video: v.id }).toString();
      const cells = [el("td", {}, el("a", { href: link }, el("img", { loading: "lazy", alt: v.id, src: `v/${encodeURIComponent(v.dir)}/thumb.jpg` }))),
        el("td", { class: "id" }, el("a", { href: link, text: v.id })), el("td", { text: v.subset }),
        el("td", { class: "classes", text: v.classes.join(", ") })];
      if (INDEX.scored) {
        for (const name of INDEX.variants) {
          const sc = v.scores[name] || {};
          cells.push(el("td", { text: fmt(sc.miou) }), el("td", { text: fmt(sc.fscore) }));
        }
        if (INDEX.compare) cells.push(el("td", { class: v.diff > 0 ? "pos" : v.diff < 0 ? "neg" : null, text: fmt(v.diff) }));
      }
      body.append(el("tr", { "data-video": v.id }, ...cells));
    }
    const note = el("p", { class: "note", text: (INDEX.scored
      ? `Scores in %: each video's mIoU and F-score (${INDEX.fscore}), as the tables' means take them.`
      : "A folder of videos without ground truth: masks only, and an overlay video per clip.")
      + (INDEX.compare_note ? ` (${INDEX.compare_note}.)` : "") });
    const skipped = INDEX.skipped.length
      ? el("p", { class: "note", text: `${INDEX.skipped.length} video(s) left out: ` + INDEX.skipped.map((x) => `${x.video_id} (${x.reason})`).join("; ") })
      : null;
    put(main, controls, note, skipped, el("table", { class: "videos" }, el("thead", {}, thead), body));
    document.body.dataset.ready = "index";
    document.body.dataset.renderMs = String(Math.round(performance.now() - t0));
  }

  let opened = 0;
  function loadVideo(id) {
    opened = performance.now();
    if (videos[id]) return renderVideo(videos[id]);
    const entry = INDEX.videos.find((v) => v.id === id);
    const main = document.getElementById("main");
    if (!entry) {
      put(main, el("p", { class: "errors", text: `no video ${id} on this page` }));
      return;
    }
    put(main, el("p", { text: `Loading ${id}…` }));
    const script = el("script", { src: `v/${encodeURIComponent(entry.dir)}/data.js` });
    script.onerror = () => fail(`cannot load v/${entry.dir}/data.js`);
    document.body.append(script);
  }

  function renderVideo(d) {
    const entry = INDEX.videos.find((v) => v.id === d.id);
    const base = `v/${encodeURIComponent(entry.dir)}/`;
    const main = document.getElementById("main");
    const T = d.frames.length;
    const names = Object.keys(d.layers);
    const panels = [["frame", null], ...names.map((n) => [n, n])];
    const imgs = [];
    const ious = [];
    const panelEls = panels.map(([label, layer]) => {
      const frameImg = el("img", { src: base + d.frames[0], alt: `${d.id} frame` });
      const stack = el("div", { class: "stack" }, frameImg);
      let layerImg = null;
      if (layer) {
        layerImg = el("img", { class: "layer", alt: `${label} mask` });
        stack.append(layerImg);
      }
      imgs.push([frameImg, layerImg, layer]);
      const iou = el("div", { class: "iou" });
      ious.push([iou, layer]);
      return el("div", { class: "panel", "data-layer": label }, el("div", { class: "name", text: label }), stack, iou);
    });
    const slider = el("input", { type: "range", min: 0, max: T - 1, value: 0, step: 1, "aria-label": "frame" });
    const counter = el("span", {});
    const audio = d.audio ? el("audio", { controls: "", preload: "metadata", src: base + d.audio }) : null;
    const show = (t) => {
      t = Math.max(0, Math.min(T - 1, t));
      slider.value = t;
      counter.textContent = `frame ${t + 1} / ${T} (second ${t})`;
      for (const [frameImg, layerImg, layer] of imgs) {
        frameImg.src = base + d.frames[t];
        if (layerImg) {
          const f = d.layers[layer][t];
          if (f) { layerImg.src = base + f; layerImg.style.display = ""; } else { layerImg.removeAttribute("src"); layerImg.style.display = "none"; }
        }
      }
      for (const [node, layer] of ious) {
        const series = layer && d.frame_iou[layer];
        node.textContent = layer === "truth" && !d.layers.truth[t] ? "no mask for this frame"
          : series ? `IoU ${fmt(series[t])}` : "";
      }
      document.body.dataset.frame = String(t);
    };
    let timer = null;
    const play = el("button", { text: "play" });
    const stop = () => {
      if (timer) clearInterval(timer);
      timer = null;
      if (audio && !audio.paused) audio.pause();
      play.textContent = "play";
    };
    play.addEventListener("click", () => {
      if (audio) { if (audio.paused) audio.play().catch(fail); else audio.pause(); return; }
      if (timer) { stop(); return; }
      if (Number(slider.value) >= T - 1) show(0);   // at the end: from the start
      play.textContent = "pause";
      timer = setInterval(() => { const t = Number(slider.value) + 1; if (t >= T) stop(); else show(t); }, 1000);
    });
    slider.addEventListener("input", () => { const t = Number(slider.value); show(t); if (audio) audio.currentTime = t; });
    if (audio) {
      audio.addEventListener("timeupdate", () => show(Math.floor(audio.currentTime)));
      audio.addEventListener("play", () => { play.textContent = "pause"; });
      audio.addEventListener("pause", () => { play.textContent = "play"; });
      audio.addEventListener("loadedmetadata", () => { audio.dataset.duration = audio.duration.toFixed(3); });
    }
    player = { show, stop };
    const scores = INDEX.scored ? el("table", { class: "videos" },
      el("tr", {}, el("th", { class: "id", text: "variant" }), el("th", { text: "mIoU" }), el("th", { text: "F" })),
      ...Object.entries(d.scores).map(([v, sc]) => el("tr", {}, el("td", { class: "id", text: v }), el("td", { text: fmt(sc.miou) }), el("td", { text: fmt(sc.fscore) })))) : null;
    const cap = el("dl", { class: "captions" },
      el("dt", { text: "A1 (the scene)" }), el("dd", { class: "a1", text: d.a1 || `(${d.caption_status})` }),
      el("dt", { text: "A2 (what makes the sound)" }), el("dd", { class: "a2", text: d.a2 || "–" }),
      el("dt", { text: "nouns (VTA's prompts)" }), el("dd", { class: "nouns", text: (d.nouns || []).join(", ") || "–" }));
    const notes = (d.notes || []).length ? el("p", { class: "errors", text: d.notes.join("; ") }) : null;
    const overlay = d.overlay ? el("p", {}, el("a", { href: base + d.overlay, text: "overlay video (MP4, with sound)" })) : null;
    put(main, 
      el("p", {}, el("a", { href: "#", text: "← all videos" })),
      el("h2", { text: d.id }),
      el("p", { class: "note", text: `setting ${d.subset}; classes: ${d.classes.join(", ") || "–"}` }), notes,
      el("div", { class: "player" }, play, slider, counter, audio),
      el("div", { class: "panels" }, ...panelEls), overlay, scores, cap);
    show(0);
    document.body.dataset.ready = "video:" + d.id;
    document.body.dataset.renderMs = String(Math.round(performance.now() - opened));
  }

  function route() {
    if (!INDEX) return;
    const s = state();
    if (player && player.stop) player.stop();
    if (s.video) loadVideo(s.video); else renderIndex(s);
  }

  window.SSP = {
    index(data) {
      INDEX = data;
      document.getElementById("title").textContent = data.title || "";
      window.addEventListener("hashchange", route);
      route();
    },
    video(data) {
      videos[data.id] = data;
      if (state().video === data.id) renderVideo(data);
    },
  };
})();

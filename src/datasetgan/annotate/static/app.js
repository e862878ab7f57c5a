// datasetgan studio: paints index masks over a workspace's candidates.
//
// Plain JavaScript, no dependencies; the page talks only to its own server's /api. The mask is
// a Uint8Array of class ids (the one source of truth), drawn through the palette onto a canvas
// at image resolution and scaled up by CSS with pixelated rendering: a painted pixel is always
// exactly one class id, never a blend.
"use strict";

const IGNORE = 255;
const AUTOSAVE_MS = 2000;
const UNDO_LIMIT = 100;
const TRAIN_POLL_MS = 1000;
const ZOOMS = [0.25, 0.5, 1, 2, 3, 4, 6, 8, 12, 16, 24, 32, 48, 64];
const CLASS_KEYS = ["1", "2", "3", "4", "5", "6", "7", "8", "9", "0"]; // class i is picked with CLASS_KEYS[i]
const MAX_BRUSH = 32;
const THRESHOLD_STEPS = 100; // the wand's similarity threshold moves in hundredths
const GOLDEN_ANGLE = 137.508; // hues this far apart stay distinct for any number of parts
const SOURCE_NAMES = { annotation: "saved annotation", prediction: "interpreter's prediction", new: "new mask" };

const $ = (id) => document.getElementById(id);
const viewport = $("viewport");
const stage = $("stage");
const layers = { image: $("image-layer"), heat: $("heat-layer"), mask: $("mask-layer"), parts: $("parts-layer") };

const state = {
  classes: [],
  lut: new Uint32Array(256), // class id -> RGBA pixel
  candidates: [],
  interpreter: false,
  id: null,
  width: 0,
  height: 0,
  opening: 0, // the latest open request; an older, slower one is dropped
  mask: null,
  pixels: null, // ImageData the mask is drawn into
  source: "new", // annotation | prediction | new
  label: 0,
  tool: "brush",
  size: 3,
  threshold: 0.8, // the wand's: cosine similarity to the clicked pixel
  undo: [],
  redo: [],
  edits: 0,
  savedEdits: 0, // the mask is dirty while edits !== savedEdits
  saving: null,
  saveTimer: null,
  view: { zoom: 1, x: 0, y: 0 },
  gesture: null, // the pointer drag in progress: stroke, lasso or pan
  polygon: null, // corners of the polygon being drawn, in pixels
  spaceHeld: false,
  heat: false,
  partsShown: false,
  parts: null, // the current image's part clusters: { id, clusters (Uint16Array), mapping }
  pending: 0, // wand and part-map requests in flight
  training: "idle",
  pollTimer: null,
  toastTimer: null,
};

// ---- server ------------------------------------------------------------------------------

class ApiError extends Error {
  constructor(status, detail) {
    super(detail);
    this.status = status;
  }
}

async function api(path, options) {
  const response = await fetch(path, options);
  if (response.ok) return response;
  let detail = `${response.status} ${response.statusText}`;
  try {
    const body = await response.json();
    detail = typeof body.detail === "string" ? body.detail : JSON.stringify(body.detail);
  } catch (_) {
    // not JSON: the status line says enough
  }
  throw new ApiError(response.status, detail);
}

const maskUrl = (id) => `/api/candidates/${id}/mask`;

async function loadImage(id) {
  const image = new Image();
  image.src = `/api/candidates/${id}/image`;
  await image.decode();
  return image;
}

async function loadMask(id) {
  try {
    const response = await api(`${maskUrl(id)}?format=raw`);
    return { data: new Uint8Array(await response.arrayBuffer()), source: response.headers.get("X-Mask-Source") };
  } catch (error) {
    if (error.status === 404) return { data: null, source: "new" };
    throw error;
  }
}

// ---- small helpers -----------------------------------------------------------------------

function el(tag, className, text) {
  const node = document.createElement(tag);
  if (className) node.className = className;
  if (text !== undefined) node.textContent = text;
  return node;
}

function toast(text, isError = false) {
  const box = $("toast");
  box.textContent = text;
  box.classList.toggle("error", isError);
  box.hidden = false;
  clearTimeout(state.toastTimer);
  state.toastTimer = setTimeout(() => (box.hidden = true), 5000);
}

function showError(error) {
  console.error(error);
  toast(error.message, true);
}

// Event handlers are async; their errors go to the toast instead of vanishing.
const guard = (fn) => (...args) => Promise.resolve().then(() => fn(...args)).catch(showError);

// ImageData is RGBA bytes; read as little-endian 32-bit words that is 0xAABBGGRR.
const rgba = ([r, g, b], alpha = 255) => ((alpha << 24) | (b << 16) | (g << 8) | r) >>> 0;

function labelName(id) {
  if (id === IGNORE) return "ignore";
  return state.classes[id] ? state.classes[id].name : `unknown id ${id}`;
}

// ---- classes -----------------------------------------------------------------------------

function buildLut(ignore) {
  state.lut.fill(rgba([255, 0, 255])); // ids outside the palette show magenta
  state.classes.forEach((c, i) => (state.lut[i] = rgba(c.color)));
  state.lut[0] = 0; // background stays clear, as in datasetgan.viz.overlay
  state.lut[IGNORE] = rgba(ignore.color);
}

function paletteEntry(entry, key) {
  const item = el("li", entry.id === IGNORE ? "ignore" : null);
  item.dataset.label = entry.id;
  item.title = key ? `${entry.name} (${key})` : entry.name;
  const swatch = el("span", "swatch");
  swatch.style.background = `rgb(${entry.color.join(",")})`;
  item.append(swatch, el("span", "name", entry.name));
  if (key) item.append(el("kbd", null, key));
  item.addEventListener("click", () => pickLabel(entry.id));
  return item;
}

function buildPalette(ignore) {
  const entries = state.classes.map((c, i) => paletteEntry(c, CLASS_KEYS[i]));
  $("palette").replaceChildren(...entries, paletteEntry(ignore, "I"));
}

function pickLabel(id) {
  state.label = id;
  if (state.tool === "eraser") pickTool("brush");
  for (const item of $("palette").children) item.classList.toggle("active", Number(item.dataset.label) === id);
}

function pickTool(tool) {
  state.tool = tool;
  cancelPolygon();
  for (const button of $("tools").children) button.classList.toggle("active", button.dataset.tool === tool);
  $("size-control").hidden = tool === "wand"; // one slider shows: the wand's threshold or the brush size
  $("threshold-control").hidden = tool !== "wand";
}

function setSize(size) {
  state.size = Math.min(MAX_BRUSH, Math.max(1, size));
  $("size").value = state.size;
  $("size-value").textContent = state.size;
}

function setThreshold(value) {
  // whole hundredths: what is sent is exactly the number shown
  state.threshold = Math.min(1, Math.max(0, Math.round(value * THRESHOLD_STEPS) / THRESHOLD_STEPS));
  $("threshold").value = state.threshold;
  $("threshold-value").textContent = state.threshold.toFixed(2);
}

// [ and ] change the current tool's setting: the wand's threshold, else the brush size.
function nudge(direction) {
  if (state.tool === "wand") setThreshold(state.threshold + direction / THRESHOLD_STEPS);
  else setSize(state.size + direction);
}

// ---- image list --------------------------------------------------------------------------

async function refreshList(withScores = false) {
  const body = await (await api(`/api/candidates${withScores ? "?scores=true" : ""}`)).json();
  state.candidates = body.candidates;
  state.interpreter = body.interpreter;
  $("heat").disabled = !state.interpreter;
  renderList();
}

function orderedCandidates() {
  const list = [...state.candidates];
  if ($("order").value === "uncertainty") list.sort((a, b) => (b.score ?? -1) - (a.score ?? -1));
  return list;
}

function renderList() {
  const items = orderedCandidates().map((c) => {
    const item = el("li", null, c.id);
    item.dataset.id = c.id;
    item.title = c.done ? "annotated" : "to do";
    item.classList.toggle("done", c.done);
    item.classList.toggle("current", c.id === state.id);
    if (c.score != null) item.append(el("span", "score", c.score.toFixed(3)));
    item.addEventListener("click", guard(() => openCandidate(c.id)));
    return item;
  });
  $("image-list").replaceChildren(...items);
  const done = state.candidates.filter((c) => c.done).length;
  $("progress").textContent = `${done}/${state.candidates.length} done`;
}

async function changeOrder() {
  if ($("order").value === "uncertainty") {
    if (!state.interpreter) toast("no interpreter yet: train one to order the images by uncertainty");
    else if (state.candidates.some((c) => c.score == null)) {
      toast("scoring the images with the interpreter…");
      await refreshList(true);
    }
  }
  renderList();
}

async function openNeighbour(step) {
  const list = orderedCandidates();
  const index = list.findIndex((c) => c.id === state.id);
  if (list.length) await openCandidate(list[(index + step + list.length) % list.length].id);
}

function markDone(id) {
  const candidate = state.candidates.find((c) => c.id === id);
  if (candidate) candidate.done = true;
  renderList();
}

// ---- opening a candidate -----------------------------------------------------------------

async function openCandidate(id) {
  const ticket = ++state.opening;
  await save(); // never leave an image with unsaved strokes
  $("source-info").textContent = `opening ${id}…`;
  const [image, mask] = await Promise.all([loadImage(id), loadMask(id)]);
  if (ticket !== state.opening) return;
  const { naturalWidth: width, naturalHeight: height } = image;
  if (mask.data && mask.data.length !== width * height) {
    throw new Error(`the mask of ${id} has ${mask.data.length} pixels, its image ${width}x${height}`);
  }
  const resized = width !== state.width || height !== state.height;
  Object.assign(state, { id, width, height, source: mask.source, undo: [], redo: [], edits: 0, savedEdits: 0 });
  state.mask = mask.data ?? new Uint8Array(width * height); // a new mask starts as background
  state.polygon = null;
  state.parts = null;
  delete stage.dataset.parts;
  setupLayers(image);
  if (resized) fitView();
  if (state.heat) await loadHeat();
  if (state.partsShown) guard(loadParts)(); // a new image's parts may take a synthesis: open without waiting
  stage.dataset.candidate = id;
  stage.dataset.source = state.source;
  $("source-info").textContent = `${id} · ${SOURCE_NAMES[state.source]}`;
  renderList();
  updateSaveState();
}

function setupLayers(image) {
  for (const canvas of Object.values(layers)) {
    canvas.width = state.width;
    canvas.height = state.height;
    canvas.getContext("2d").imageSmoothingEnabled = false;
  }
  $("overlay").setAttribute("viewBox", `0 0 ${state.width} ${state.height}`);
  layers.image.getContext("2d").drawImage(image, 0, 0);
  state.pixels = new ImageData(state.width, state.height);
  renderMask();
  drawPolygonPreview();
}

function renderMask() {
  const words = new Uint32Array(state.pixels.data.buffer);
  const { mask, lut } = state;
  for (let i = 0; i < mask.length; i++) words[i] = lut[mask[i]];
  layers.mask.getContext("2d").putImageData(state.pixels, 0, 0);
}

async function toggleHeat() {
  if (!state.interpreter) return;
  state.heat = !state.heat;
  $("heat").classList.toggle("active", state.heat);
  layers.heat.hidden = !state.heat;
  if (state.heat) await loadHeat();
}

async function loadHeat() {
  const id = state.id;
  const bitmap = await createImageBitmap(await (await api(`/api/candidates/${id}/uncertainty`)).blob());
  if (id === state.id) layers.heat.getContext("2d").drawImage(bitmap, 0, 0);
}

// ---- mask operations (pure: mask, size and arguments in, pixels changed) -------------------

// A size-n brush covers n pixels across: odd sizes centre on a pixel, even ones on a corner.
const brushLattice = ([fx, fy], size) =>
  size % 2 ? [Math.floor(fx), Math.floor(fy)] : [Math.round(fx), Math.round(fy)];
const brushCentre = ([lx, ly], size) => (size % 2 ? [lx + 0.5, ly + 0.5] : [lx, ly]);
const pixelAt = ([fx, fy]) => [Math.floor(fx), Math.floor(fy)];
const samePoint = (a, b) => a[0] === b[0] && a[1] === b[1];

function stampBrush(mask, width, height, [cx, cy], size, label) {
  const radius = size / 2;
  const x0 = Math.max(0, Math.floor(cx - radius)), x1 = Math.min(width - 1, Math.ceil(cx + radius));
  const y0 = Math.max(0, Math.floor(cy - radius)), y1 = Math.min(height - 1, Math.ceil(cy + radius));
  for (let y = y0; y <= y1; y++) {
    for (let x = x0; x <= x1; x++) {
      const dx = x + 0.5 - cx, dy = y + 0.5 - cy;
      if (dx * dx + dy * dy <= radius * radius) mask[y * width + x] = label;
    }
  }
}

function linePoints([x0, y0], [x1, y1]) {
  // Bresenham: every pixel between two pixels, 8-connected, no gaps
  const points = [];
  const dx = Math.abs(x1 - x0), dy = -Math.abs(y1 - y0);
  const sx = x0 < x1 ? 1 : -1, sy = y0 < y1 ? 1 : -1;
  let error = dx + dy;
  for (;;) {
    points.push([x0, y0]);
    if (x0 === x1 && y0 === y1) return points;
    const doubled = 2 * error;
    if (doubled >= dy) { error += dy; x0 += sx; }
    if (doubled <= dx) { error += dx; y0 += sy; }
  }
}

// Paints `label` wherever `selected(i)` holds; false when no pixel changes.
function paintWhere(mask, selected, label) {
  let changed = false;
  for (let i = 0; i < mask.length; i++) {
    if (selected(i) && mask[i] !== label) {
      mask[i] = label;
      changed = true;
    }
  }
  return changed;
}

function floodFill(mask, width, height, [x, y], label) {
  // 4-connected: a one-pixel diagonal outline holds the fill in
  const start = y * width + x, target = mask[start];
  if (target === label) return false;
  mask[start] = label;
  const stack = [start];
  while (stack.length) {
    const i = stack.pop(), column = i % width;
    const neighbours = [column > 0 ? i - 1 : -1, column < width - 1 ? i + 1 : -1, i - width, i + width];
    for (const j of neighbours) {
      if (j >= 0 && j < mask.length && mask[j] === target) {
        mask[j] = label;
        stack.push(j);
      }
    }
  }
  return true;
}

function fillPolygon(mask, width, height, corners, label) {
  // Pixels whose centre is inside (even-odd rule on each row), plus the outline itself, so
  // the pixels clicked as corners are always part of the fill.
  const edges = corners.map((a, k) => [a, corners[(k + 1) % corners.length]]);
  const rows = corners.map((p) => p[1]);
  for (let y = Math.max(0, Math.min(...rows)); y <= Math.min(height - 1, Math.max(...rows)); y++) {
    const crossings = edges
      .filter(([a, b]) => (a[1] <= y && y < b[1]) || (b[1] <= y && y < a[1]))
      .map(([a, b]) => a[0] + ((y - a[1]) * (b[0] - a[0])) / (b[1] - a[1]))
      .sort((a, b) => a - b);
    for (let k = 0; k + 1 < crossings.length; k += 2) {
      const last = Math.min(width - 1, Math.floor(crossings[k + 1]));
      for (let x = Math.max(0, Math.ceil(crossings[k])); x <= last; x++) mask[y * width + x] = label;
    }
  }
  for (const [a, b] of edges) {
    for (const [x, y] of linePoints(a, b)) {
      if (x >= 0 && y >= 0 && x < width && y < height) mask[y * width + x] = label;
    }
  }
}

// ---- editing with undo -------------------------------------------------------------------

function beginEdit() {
  state.undo.push(state.mask.slice());
  if (state.undo.length > UNDO_LIMIT) state.undo.shift();
  state.redo = [];
}

function endEdit() {
  state.edits++;
  renderMask();
  scheduleAutosave();
  updateSaveState();
}

// An edit made at once (fill, wand, part): one undo step, kept only if `edit(mask)` changed a pixel.
function applyEdit(edit) {
  const before = state.mask.slice();
  if (!edit(state.mask)) return;
  state.undo.push(before);
  if (state.undo.length > UNDO_LIMIT) state.undo.shift();
  state.redo = [];
  endEdit();
}

function step(from, to) {
  if (!from.length || state.gesture) return;
  to.push(state.mask);
  state.mask = from.pop();
  endEdit();
}

const undo = () => step(state.undo, state.redo);
const redo = () => step(state.redo, state.undo);

function paintAlong(from, to) {
  const { mask, width, height, size } = state;
  for (const point of linePoints(from, to)) {
    stampBrush(mask, width, height, brushCentre(point, size), size, state.gesture.label);
  }
  renderMask();
}

function startStroke(point) {
  beginEdit();
  const lattice = brushLattice(point, state.size);
  state.gesture = { kind: "stroke", last: lattice, label: state.tool === "eraser" ? 0 : state.label };
  paintAlong(lattice, lattice);
}

function continueStroke(point) {
  const lattice = brushLattice(point, state.size);
  if (samePoint(lattice, state.gesture.last)) return;
  paintAlong(state.gesture.last, lattice);
  state.gesture.last = lattice;
}

const insideImage = ([x, y]) => x >= 0 && y >= 0 && x < state.width && y < state.height;

function fillAt(point) {
  const [x, y] = pixelAt(point);
  if (insideImage([x, y])) applyEdit((mask) => floodFill(mask, state.width, state.height, [x, y], state.label));
}

// A polygon is drawn by clicking its corners (closed by Enter, a double-click or the first
// corner) or by dragging a freehand lasso (closed on release).
function polygonDown(point) {
  const corner = pixelAt(point);
  state.polygon ??= [];
  if (state.polygon.length > 2 && samePoint(corner, state.polygon[0])) return closePolygon();
  addCorner(corner);
  state.gesture = { kind: "lasso", dragged: 0 };
}

function addCorner(corner) {
  const last = state.polygon[state.polygon.length - 1];
  if (last && samePoint(last, corner)) return false;
  state.polygon.push(corner);
  drawPolygonPreview();
  return true;
}

function closePolygon() {
  const corners = state.polygon;
  state.polygon = null;
  drawPolygonPreview();
  if (!corners || !corners.length) return;
  beginEdit();
  fillPolygon(state.mask, state.width, state.height, corners, state.label);
  endEdit();
}

function cancelPolygon() {
  state.polygon = null;
  drawPolygonPreview();
}

function removeCorner() {
  if (!state.polygon) return;
  state.polygon.pop();
  drawPolygonPreview();
}

function drawPolygonPreview(cursor) {
  const corners = state.polygon ?? [];
  const points = corners.map(([x, y]) => `${x + 0.5},${y + 0.5}`);
  if (corners.length && cursor) points.push(`${cursor[0]},${cursor[1]}`);
  $("polygon-preview").setAttribute("points", points.join(" "));
}

// ---- assists: the feature magic wand and the auto-parts layer -------------------------------

// Requests the pointer waits on (wand regions, part maps): a busy cursor meanwhile.
function setPending(step) {
  state.pending += step;
  viewport.classList.toggle("busy", state.pending > 0);
}

// The server returns the region as H*W bytes, 1 = selected; the class picked at the click paints it.
async function wandAt(point) {
  const [x, y] = pixelAt(point);
  if (!insideImage([x, y])) return;
  const { id, opening, label, threshold } = state;
  setPending(1);
  try {
    const response = await api(`/api/candidates/${id}/wand`, {
      method: "POST",
      headers: { "Content-Type": "application/json" },
      body: JSON.stringify({ x, y, threshold }),
    });
    const region = new Uint8Array(await response.arrayBuffer());
    if (id !== state.id || opening !== state.opening) return; // another image was opened meanwhile
    if (region.length !== state.mask.length) throw new Error(`the wand's region has ${region.length} pixels`);
    applyEdit((mask) => paintWhere(mask, (i) => region[i] === 1, label));
  } finally {
    setPending(-1);
  }
}

// HSL (saturation 0.7) to [r, g, b]; neighbouring cluster ids get far-apart hues.
function partColor(cluster) {
  const hue = (cluster * GOLDEN_ANGLE) % 360, light = [0.45, 0.6, 0.75][cluster % 3];
  const a = 0.7 * Math.min(light, 1 - light);
  const channel = (n) => {
    const k = (n + hue / 30) % 12;
    return Math.round(255 * (light - a * Math.max(-1, Math.min(k - 3, 9 - k, 1))));
  };
  return [channel(0), channel(8), channel(4)];
}

const fetchMapping = async () => (await (await api("/api/parts/mapping")).json()).mapping;

async function loadParts() {
  const id = state.id;
  setPending(1); // the first look at an image synthesises its features
  const [response, mapping] = await Promise.all([api(`/api/candidates/${id}/clusters`), fetchMapping()])
    .finally(() => setPending(-1));
  const bytes = new DataView(await response.arrayBuffer());
  const clusters = new Uint16Array(bytes.byteLength / 2).map((_, i) => bytes.getUint16(2 * i, true)); // little-endian
  if (id !== state.id) return;
  if (clusters.length !== state.mask.length) throw new Error(`the part map of ${id} has ${clusters.length} pixels`);
  state.parts = { id, clusters, mapping };
  renderParts(Number(response.headers.get("X-Clusters")));
  stage.dataset.parts = id;
}

function renderParts(k) {
  const lut = Uint32Array.from({ length: k }, (_, cluster) => rgba(partColor(cluster)));
  const image = new ImageData(state.width, state.height);
  const words = new Uint32Array(image.data.buffer);
  state.parts.clusters.forEach((cluster, i) => (words[i] = lut[cluster]));
  layers.parts.getContext("2d").putImageData(image, 0, 0);
}

function showParts(shown) {
  state.partsShown = shown;
  cancelPolygon(); // clicks now go to the parts
  $("parts").classList.toggle("active", shown);
  layers.parts.hidden = !shown;
}

async function toggleParts() {
  showParts(!state.partsShown);
  if (!state.partsShown || !state.id || state.parts?.id === state.id) return;
  try {
    await loadParts();
  } catch (error) {
    showParts(false); // e.g. no part model yet: the message says to run `datasetgan discover`
    throw error;
  }
}

// A click paints the clicked pixel's whole part (cluster) in this image; with Shift the part is
// also mapped to the class for all images (the workspace's part mapping).
async function partAt(point, everywhere) {
  const parts = state.parts, [x, y] = pixelAt(point);
  if (!parts || parts.id !== state.id || !insideImage([x, y])) return; // still loading
  const cluster = parts.clusters[y * state.width + x], label = state.label;
  applyEdit((mask) => paintWhere(mask, (i) => parts.clusters[i] === cluster, label));
  if (everywhere) await mapPart(parts, cluster, label);
}

async function mapPart(parts, cluster, label) {
  const mapping = { ...(await fetchMapping()), [cluster]: labelName(label) };
  const response = await api("/api/parts/mapping", {
    method: "PUT",
    headers: { "Content-Type": "application/json" },
    body: JSON.stringify({ mapping }),
  });
  parts.mapping = (await response.json()).mapping;
  toast(`part ${cluster} is ${labelName(label)} in every image`);
}

function partInfo(x, y) {
  if (!state.partsShown || state.parts?.id !== state.id) return "";
  const cluster = state.parts.clusters[y * state.width + x], mapped = state.parts.mapping[cluster];
  return `  ·  part ${cluster}${mapped ? ` \u2192 ${mapped}` : ""}`;
}

// ---- pointer: paint, pan, zoom ------------------------------------------------------------

function imagePoint(event) {
  const box = stage.getBoundingClientRect();
  return [
    ((event.clientX - box.left) * state.width) / box.width,
    ((event.clientY - box.top) * state.height) / box.height,
  ];
}

function onPointerDown(event) {
  if (!state.mask || state.gesture) return;
  viewport.setPointerCapture(event.pointerId);
  if (event.button === 1 || event.button === 2 || state.spaceHeld) return startPan(event);
  if (event.button !== 0) return;
  const point = imagePoint(event);
  if (state.partsShown) return guard(partAt)(point, event.shiftKey);
  if (state.tool === "wand") return guard(wandAt)(point);
  if (state.tool === "fill") return fillAt(point);
  if (state.tool === "polygon") return polygonDown(point);
  startStroke(point);
}

function onPointerMove(event) {
  if (!state.mask) return;
  const point = imagePoint(event);
  showCursor(point);
  const gesture = state.gesture;
  if (gesture?.kind === "pan") setView(state.view.zoom, event.clientX - gesture.dx, event.clientY - gesture.dy);
  if (gesture?.kind === "stroke") continueStroke(point);
  if (gesture?.kind === "lasso" && addCorner(pixelAt(point))) gesture.dragged++;
  if (state.polygon) drawPolygonPreview(point);
}

function onPointerUp() {
  const gesture = state.gesture;
  state.gesture = null;
  viewport.classList.remove("panning");
  if (gesture?.kind === "stroke") endEdit();
  if (gesture?.kind === "lasso" && gesture.dragged > 1) closePolygon();
}

function startPan(event) {
  state.gesture = { kind: "pan", dx: event.clientX - state.view.x, dy: event.clientY - state.view.y };
  viewport.classList.add("panning");
}

function showCursor(point) {
  const painting = state.tool === "brush" || state.tool === "eraser";
  const size = painting ? state.size : 1;
  const [cx, cy] = brushCentre(brushLattice(point, size), size);
  const cursor = $("brush-cursor");
  const shape = { x: cx - size / 2, y: cy - size / 2, width: size, height: size, rx: size > 3 ? size / 2 : 0 };
  for (const [name, value] of Object.entries(shape)) cursor.setAttribute(name, value);
  const [x, y] = pixelAt(point);
  const inside = x >= 0 && y >= 0 && x < state.width && y < state.height;
  const label = inside ? labelName(state.mask[y * state.width + x]) : "";
  $("cursor-info").textContent = inside ? `x ${x}  y ${y}  ·  ${label}${partInfo(x, y)}` : "\u00a0";
}

function setView(zoom, x, y) {
  // whole CSS pixels keep the image's pixel edges on screen pixels
  state.view = { zoom, x: Math.round(x), y: Math.round(y) };
  Object.assign(stage.style, {
    width: `${state.width * zoom}px`,
    height: `${state.height * zoom}px`,
    left: `${state.view.x}px`,
    top: `${state.view.y}px`,
  });
  $("zoom-value").textContent = `${Math.round(zoom * 100)}%`;
}

function zoomStep(direction, at) {
  const { zoom, x, y } = state.view;
  const next = direction > 0 ? ZOOMS.find((z) => z > zoom) : ZOOMS.filter((z) => z < zoom).pop();
  if (next === undefined) return;
  const box = viewport.getBoundingClientRect();
  const [cx, cy] = at ?? [box.width / 2, box.height / 2]; // this viewport point stays put
  setView(next, cx - ((cx - x) / zoom) * next, cy - ((cy - y) / zoom) * next);
}

function fitView() {
  const box = viewport.getBoundingClientRect();
  const fit = 0.92 * Math.min(box.width / state.width, box.height / state.height);
  const zoom = fit >= 1 ? Math.floor(fit) : ZOOMS.filter((z) => z <= fit).pop() ?? ZOOMS[0];
  setView(zoom, (box.width - state.width * zoom) / 2, (box.height - state.height * zoom) / 2);
}

function onWheel(event) {
  event.preventDefault();
  const box = viewport.getBoundingClientRect();
  zoomStep(-Math.sign(event.deltaY), [event.clientX - box.left, event.clientY - box.top]);
}

// ---- saving ------------------------------------------------------------------------------

// The upload format: the mask's raw bytes, one uint8 class id per pixel, row-major.
const putMaskRequest = () => ({
  method: "PUT",
  headers: { "Content-Type": "application/octet-stream" },
  body: state.mask.slice(),
});

const isDirty = () => state.mask !== null && state.edits !== state.savedEdits;

function scheduleAutosave() {
  clearTimeout(state.saveTimer);
  state.saveTimer = setTimeout(autosave, AUTOSAVE_MS);
}

function autosave() {
  if (state.gesture) return scheduleAutosave(); // never save half a stroke
  save().catch(() => {}); // the failure is shown in the save state
}

// explicit: also save an untouched prediction or new mask (the user accepts it as it is)
async function save(explicit = false) {
  clearTimeout(state.saveTimer);
  while (state.saving) await state.saving.catch(() => {});
  if (!isDirty() && !(explicit && state.mask && state.source !== "annotation")) return;
  const id = state.id, edits = state.edits;
  setSaveState("saving", "saving…");
  state.saving = api(maskUrl(id), putMaskRequest());
  try {
    await state.saving;
  } catch (error) {
    setSaveState("error", `not saved: ${error.message}`);
    throw error;
  } finally {
    state.saving = null;
  }
  state.savedEdits = edits;
  state.source = "annotation";
  stage.dataset.source = "annotation";
  markDone(id);
  updateSaveState();
}

function setSaveState(kind, text) {
  document.body.dataset.save = kind;
  $("save-state").textContent = text;
}

function updateSaveState() {
  if (isDirty()) setSaveState("dirty", "unsaved changes");
  else if (state.source === "annotation") setSaveState("saved", "saved");
  else if (state.source === "prediction") setSaveState("idle", "prediction, not saved");
  else setSaveState("idle", "not saved yet");
}

function onBeforeUnload(event) {
  if (!isDirty()) return;
  fetch(maskUrl(state.id), { ...putMaskRequest(), keepalive: true }); // a last save as the page goes
  event.preventDefault();
}

// ---- training ----------------------------------------------------------------------------

async function startTraining() {
  await save(); // the strokes on screen count
  const response = await api("/api/train", { method: "POST" });
  showTraining(await response.json());
  await pollTraining();
}

async function pollTraining() {
  clearTimeout(state.pollTimer);
  const status = await (await api("/api/train")).json();
  const finished = state.training === "running" && status.state === "done";
  showTraining(status);
  if (status.state === "running") state.pollTimer = setTimeout(guard(pollTraining), TRAIN_POLL_MS);
  if (finished) await afterTraining();
}

function showTraining({ state: phase, message }) {
  state.training = phase;
  const label = $("train-status");
  label.dataset.state = phase;
  label.textContent = phase === "idle" ? "" : `interpreter: ${phase}: ${message}`;
  $("train").disabled = phase === "running";
  $("train").textContent = phase === "running" ? "Training…" : "Train now";
}

async function afterTraining() {
  await refreshList();
  toast("interpreter trained: images without an annotation now open with its prediction");
  if (state.id && state.source !== "annotation" && !isDirty()) await openCandidate(state.id);
  else if (state.heat) await loadHeat();
}

// ---- keyboard ----------------------------------------------------------------------------

const KEY_ACTIONS = {
  i: () => pickLabel(IGNORE),
  b: () => pickTool("brush"),
  e: () => pickTool("eraser"),
  f: () => pickTool("fill"),
  l: () => pickTool("polygon"),
  w: () => pickTool("wand"),
  "[": () => nudge(-1),
  "]": () => nudge(1),
  "+": () => zoomStep(1),
  "=": () => zoomStep(1),
  "-": () => zoomStep(-1),
  z: () => fitView(),
  h: guard(toggleHeat),
  a: guard(toggleParts),
  n: guard(() => openNeighbour(1)),
  p: guard(() => openNeighbour(-1)),
  enter: () => closePolygon(),
  escape: () => cancelPolygon(),
  backspace: () => removeCorner(),
  " ": () => (state.spaceHeld = true),
};

const CTRL_ACTIONS = {
  z: (event) => (event.shiftKey ? redo() : undo()),
  y: () => redo(),
  s: guard(() => save(true)),
};

function onKeyDown(event) {
  const key = event.key.toLowerCase();
  const modified = event.ctrlKey || event.metaKey;
  if (!modified && event.target.tagName === "SELECT") return; // a list keeps its type-ahead
  const classIndex = CLASS_KEYS.indexOf(event.key);
  let action = modified ? CTRL_ACTIONS[key] : KEY_ACTIONS[key];
  if (!modified && classIndex >= 0 && classIndex < state.classes.length) action = () => pickLabel(classIndex);
  if (!action || event.altKey) return;
  event.preventDefault();
  action(event);
}

function onKeyUp(event) {
  if (event.key === " ") state.spaceHeld = false;
}

// ---- start -------------------------------------------------------------------------------

function bindControls() {
  for (const button of $("tools").children) button.addEventListener("click", () => pickTool(button.dataset.tool));
  $("size").addEventListener("input", (event) => setSize(Number(event.target.value)));
  $("threshold").addEventListener("input", (event) => setThreshold(Number(event.target.value)));
  $("opacity").addEventListener("input", (event) => (layers.mask.style.opacity = event.target.value / 100));
  $("undo").addEventListener("click", undo);
  $("redo").addEventListener("click", redo);
  $("zoom-in").addEventListener("click", () => zoomStep(1));
  $("zoom-out").addEventListener("click", () => zoomStep(-1));
  $("fit").addEventListener("click", fitView);
  $("heat").addEventListener("click", guard(toggleHeat));
  $("parts").addEventListener("click", guard(toggleParts));
  $("save").addEventListener("click", guard(() => save(true)));
  $("train").addEventListener("click", guard(startTraining));
  $("order").addEventListener("change", guard(changeOrder));
  viewport.addEventListener("pointerdown", onPointerDown);
  viewport.addEventListener("pointermove", onPointerMove);
  viewport.addEventListener("pointerup", onPointerUp);
  viewport.addEventListener("pointercancel", onPointerUp);
  viewport.addEventListener("pointerleave", () => $("brush-cursor").setAttribute("width", 0));
  viewport.addEventListener("dblclick", () => state.tool === "polygon" && closePolygon());
  viewport.addEventListener("wheel", onWheel, { passive: false });
  viewport.addEventListener("contextmenu", (event) => event.preventDefault());
  window.addEventListener("keydown", onKeyDown);
  window.addEventListener("keyup", onKeyUp);
  window.addEventListener("beforeunload", onBeforeUnload);
}

async function init() {
  bindControls();
  layers.mask.style.opacity = $("opacity").value / 100;
  const { classes, ignore } = await (await api("/api/classes")).json();
  state.classes = classes;
  buildLut(ignore);
  buildPalette(ignore);
  pickLabel(classes.length > 1 ? 1 : 0);
  pickTool("brush");
  setSize(state.size);
  setThreshold(state.threshold);
  await refreshList();
  await pollTraining();
  const first = state.candidates.find((c) => !c.done) ?? state.candidates[0];
  if (first) await openCandidate(first.id);
  else toast("no candidates yet: add some with `datasetgan sample DIR -n 20`", true);
}

// A handle for scripted use (the end-to-end tests): the mask as class ids, and the view.
window.studio = {
  mask: () => Array.from(state.mask ?? []),
  setView,
};

guard(init)();

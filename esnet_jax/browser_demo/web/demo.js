// The ESNet browser demo: an image, a video file or the webcam, segmented on this device by
// onnxruntime-web (WebGPU where the browser has it, else WebAssembly with SIMD and threads).
// The model and its contract (mean, std, class names, colours) come from the esnet-jax
// export beside this page: model/esnet.onnx and model/esnet.onnx.json.
// ?backend=webgpu|wasm asks for one backend (an error on the page if it cannot be had),
// ?threads=N sets WebAssembly's threads, ?sizes=360x480,240x320 the input sizes offered. window.esnet exposes the state for tests.
import * as ort from './ort/ort.webgpu.min.mjs';

const $ = (id) => document.getElementById(id);
const params = new URLSearchParams(location.search);
const view = $('view');
const viewCtx = view.getContext('2d');
const work = document.createElement('canvas');
const workCtx = work.getContext('2d', { willReadFrequently: true });
const mask = document.createElement('canvas');
const maskCtx = mask.getContext('2d');

const demo = {
  state: 'loading', message: '', backend: null, threads: null, meta: null,
  last: null,        // {height, width, classes: Uint8Array, ms} of the last frame
  frames: 0,
  inputs: 0,         // how many inputs (files, camera starts) the page was given
};
window.esnet = demo;

let session = null;
let source = null;   // an ImageBitmap, or a playing <video>
let stream = null;
let loopId = 0;
let busy = false;
const recent = [];   // completion times of the last frames, for the FPS

function setState(state) {
  demo.state = state;
  document.body.dataset.state = state;
}

function showError(text) {
  demo.message = text;
  $('message').textContent = text;
  $('message').hidden = false;
  setState('error');
}

function clearError() {
  demo.message = '';
  $('message').hidden = true;
}

function inputSize() {
  const [h, w] = $('size').value.split('x').map(Number);
  return { h, w };
}

async function chooseBackend() {
  const asked = params.get('backend');
  if (asked && asked !== 'webgpu' && asked !== 'wasm') {
    throw new Error(`?backend=${asked}: expected webgpu or wasm.`);
  }
  let adapter = null;
  if (asked !== 'wasm' && navigator.gpu) {
    try { adapter = await navigator.gpu.requestAdapter(); } catch (e) { adapter = null; }
  }
  if (asked === 'webgpu' && !adapter) {
    throw new Error('?backend=webgpu: this browser offers no WebGPU adapter; open the page without ?backend to use WebAssembly.');
  }
  return adapter ? 'webgpu' : 'wasm';
}

function offerSizes() {
  const asked = params.get('sizes');
  if (!asked) return;
  const sizes = asked.split(',');
  if (!sizes.every((s) => /^\d+x\d+$/.test(s) && s.split('x').every((v) => v > 0 && v % 8 === 0))) {
    throw new Error(`?sizes=${asked}: expected HxW[,HxW...] with H and W multiples of 8.`);
  }
  $('size').replaceChildren(...sizes.map((s) => new Option(s.replace('x', '×'), s)));
}

async function load() {
  offerSizes();
  const metaResponse = await fetch('model/esnet.onnx.json');
  if (!metaResponse.ok) throw new Error(`model/esnet.onnx.json: HTTP ${metaResponse.status}; serve the page with python -m esnet_jax.demo.`);
  const meta = await metaResponse.json();
  demo.meta = meta;
  const backend = await chooseBackend();
  const cores = navigator.hardwareConcurrency || 1;
  const threads = Number(params.get('threads')) || (self.crossOriginIsolated ? Math.min(cores, 8) : 1);
  ort.env.wasm.numThreads = threads;
  ort.env.wasm.wasmPaths = new URL('ort/', location.href).href;
  session = await ort.InferenceSession.create('model/esnet.onnx', {
    executionProviders: [backend], graphOptimizationLevel: 'all',
  });
  // One untimed call, so that the first frame's latency is not the runtime's warm-up.
  const { h, w } = inputSize();
  await session.run({ [session.inputNames[0]]: new ort.Tensor('float32', new Float32Array(h * w * 3), [1, h, w, 3]) });
  demo.backend = backend;
  demo.threads = backend === 'wasm' ? threads : null;
  $('backend').textContent = backend === 'wasm'
    ? `WebAssembly (SIMD, ${threads} thread${threads > 1 ? 's' : ''}${self.crossOriginIsolated ? '' : '; not cross-origin isolated'})`
    : 'WebGPU';
  buildLegend(meta);
  setState('ready');
}

function buildLegend(meta) {
  const legend = $('legend');
  legend.replaceChildren();
  (meta.class_names || []).forEach((name, i) => {
    const [r, g, b] = meta.colours[i];
    const item = document.createElement('li');
    const swatch = document.createElement('span');
    swatch.className = 'swatch';
    swatch.style.background = `rgb(${r},${g},${b})`;
    item.append(swatch, name);
    legend.append(item);
  });
}

function sourceSize(src) {
  return src instanceof HTMLVideoElement
    ? { w: src.videoWidth, h: src.videoHeight } : { w: src.width, h: src.height };
}

function toTensor(src, h, w) {
  work.width = w;
  work.height = h;
  workCtx.imageSmoothingQuality = 'high';
  workCtx.drawImage(src, 0, 0, w, h);
  const rgba = workCtx.getImageData(0, 0, w, h).data;
  const { mean, std } = demo.meta;
  const x = new Float32Array(h * w * 3);
  for (let i = 0, j = 0; j < rgba.length; i += 3, j += 4) {
    x[i] = (rgba[j] - mean[0]) / std[0];
    x[i + 1] = (rgba[j + 1] - mean[1]) / std[1];
    x[i + 2] = (rgba[j + 2] - mean[2]) / std[2];
  }
  return new ort.Tensor('float32', x, [1, h, w, 3]);
}

function argmax(logits, pixels, classes) {
  const out = new Uint8Array(pixels);
  for (let p = 0, k = 0; p < pixels; p++, k += classes) {
    let best = 0;
    let top = logits[k];
    for (let c = 1; c < classes; c++) {
      if (logits[k + c] > top) { top = logits[k + c]; best = c; }
    }
    out[p] = best;
  }
  return out;
}

function render(src, classes, h, w) {
  const { w: sw, h: sh } = sourceSize(src);
  const scale = Math.min(1, 960 / sw);
  view.width = Math.round(sw * scale);
  view.height = Math.round(sh * scale);
  viewCtx.globalAlpha = 1;
  viewCtx.drawImage(src, 0, 0, view.width, view.height);
  mask.width = w;
  mask.height = h;
  const image = maskCtx.createImageData(w, h);
  const colours = demo.meta.colours;
  for (let p = 0, j = 0; p < classes.length; p++, j += 4) {
    const c = colours[classes[p]];
    image.data[j] = c[0]; image.data[j + 1] = c[1]; image.data[j + 2] = c[2]; image.data[j + 3] = 255;
  }
  maskCtx.putImageData(image, 0, 0);
  viewCtx.imageSmoothingEnabled = false;
  viewCtx.globalAlpha = Number($('alpha').value);
  viewCtx.drawImage(mask, 0, 0, view.width, view.height);
  viewCtx.globalAlpha = 1;
}

async function segment(src) {
  const { h, w } = inputSize();
  const start = performance.now();
  const input = toTensor(src, h, w);
  const outputs = await session.run({ [session.inputNames[0]]: input });
  const logits = outputs[session.outputNames[0]];
  const classes = argmax(logits.data, h * w, logits.dims[3]);
  render(src, classes, h, w);
  const ms = performance.now() - start;
  demo.last = { height: h, width: w, classes, ms };
  demo.frames += 1;
  const now = performance.now();
  recent.push(now);
  while (recent.length && now - recent[0] > 2000) recent.shift();
  $('latency').textContent = `${ms.toFixed(0)} ms a frame at ${h}×${w}`;
  if (recent.length > 1) {
    demo.fps = (recent.length - 1) / ((now - recent[0]) / 1000);
    $('fps').textContent = `${demo.fps.toFixed(1)} FPS`;
  }
}

function stopLive() {
  loopId += 1;
  if (stream) stream.getTracks().forEach((t) => t.stop());
  stream = null;
  if (source instanceof HTMLVideoElement) source.pause();
  $('stop').disabled = true;
}

async function showImage(file) {
  stopLive();
  let bitmap;
  try {
    bitmap = await createImageBitmap(file, { colorSpaceConversion: 'none', premultiplyAlpha: 'none' });
  } catch (e) {
    showError(`Could not read ${file.name} as an image: the browser cannot decode it (${e.name}).`);
    return;
  }
  source = bitmap;
  clearError();
  await runSafely(async () => { await segment(bitmap); setState('done'); });
}

async function runSafely(task) {
  try {
    await task();
  } catch (e) {
    stopLive();
    showError(`Segmentation failed: ${e.message || e}`);
  }
}

function live(video) {
  source = video;
  clearError();
  setState('running');
  $('stop').disabled = false;
  const id = ++loopId;
  const step = async () => {
    if (id !== loopId) return;
    if (!busy && video.readyState >= 2 && video.videoWidth > 0) {
      busy = true;
      try { await segment(video); } catch (e) { busy = false; stopLive(); showError(`Segmentation failed: ${e.message || e}`); return; }
      busy = false;
    }
    requestAnimationFrame(step);
  };
  requestAnimationFrame(step);
}

function showVideo(file) {
  stopLive();
  const video = document.createElement('video');
  video.muted = true;
  video.loop = true;
  video.playsInline = true;
  const url = URL.createObjectURL(file);
  video.addEventListener('error', () => {
    URL.revokeObjectURL(url);
    const codes = { 1: 'aborted', 2: 'a network error', 3: 'a decoding error', 4: 'a format or codec this browser does not play' };
    const why = video.error ? codes[video.error.code] || `error ${video.error.code}` : 'unknown';
    stopLive();
    showError(`The browser cannot play the video ${file.name} (${why}); try an MP4 (H.264) or WebM file.`);
  }, { once: true });
  video.addEventListener('loadeddata', () => { video.play().catch(() => {}); live(video); }, { once: true });
  video.src = url;
}

function begin() {
  demo.inputs += 1;
  clearError();
  setState('working');
}

function openFile(file) {
  begin();
  if (!session) { showError('The model is not loaded yet.'); return; }
  if (file.type.startsWith('image/')) return showImage(file);
  if (file.type.startsWith('video/')) return showVideo(file);
  stopLive();
  showError(`${file.name} is not an image or a video (its type: ${file.type || 'unknown'}).`);
}

async function startCamera() {
  begin();
  stopLive();
  if (!navigator.mediaDevices || !navigator.mediaDevices.getUserMedia) {
    showError('This page cannot use a camera here: the browser allows cameras only on https:// or localhost pages.');
    return;
  }
  try {
    stream = await navigator.mediaDevices.getUserMedia({ video: { width: 640, height: 480 }, audio: false });
  } catch (e) {
    const messages = {
      NotAllowedError: 'Camera permission was refused: allow the camera for this page in the browser and try again.',
      NotFoundError: 'No camera was found on this device.',
      NotReadableError: 'The camera is in use by another program or cannot be read.',
      OverconstrainedError: 'The camera cannot deliver video at 640×480.',
    };
    showError(messages[e.name] || `The camera could not be started (${e.name}: ${e.message}).`);
    return;
  }
  const video = document.createElement('video');
  video.muted = true;
  video.playsInline = true;
  video.srcObject = stream;
  await video.play().catch(() => {});
  live(video);
}

// Times `runs` network calls on the current source at the selected size (tests, benchmarks).
demo.benchmark = async (runs = 10, warmup = 2) => {
  if (!source) throw new Error('no image or video shown yet');
  const { h, w } = inputSize();
  const input = toTensor(source, h, w);
  const feed = { [session.inputNames[0]]: input };
  for (let i = 0; i < warmup; i++) await session.run(feed);
  const times = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await session.run(feed);
    times.push(performance.now() - start);
  }
  return { height: h, width: w, backend: demo.backend, threads: demo.threads, times };
};

$('file').addEventListener('change', (e) => { if (e.target.files.length) openFile(e.target.files[0]); });
$('camera').addEventListener('click', startCamera);
$('stop').addEventListener('click', () => { stopLive(); if (demo.state === 'running') setState('done'); });
$('size').addEventListener('change', () => { if (source && !(source instanceof HTMLVideoElement)) runSafely(async () => { await segment(source); setState('done'); }); });
$('alpha').addEventListener('input', () => { if (demo.last && source && !(source instanceof HTMLVideoElement)) render(source, demo.last.classes, demo.last.height, demo.last.width); });
const stage = $('stage');
stage.addEventListener('dragover', (e) => { e.preventDefault(); stage.classList.add('over'); });
stage.addEventListener('dragleave', () => stage.classList.remove('over'));
stage.addEventListener('drop', (e) => {
  e.preventDefault();
  stage.classList.remove('over');
  if (e.dataTransfer.files.length) openFile(e.dataTransfer.files[0]);
});

load().catch((e) => showError(`The model could not be loaded: ${e.message || e}`));

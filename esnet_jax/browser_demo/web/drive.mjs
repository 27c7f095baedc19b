// Drives the ESNet demo page in headless Chromium (playwright-core, the system's browser).
//   node drive.mjs '{"task": "segment", "url": ..., "chromium": ..., ...}'
// Tasks: segment (an image in, the class map and a screenshot out), inputs (files and
// cameras, good and bad: what the page shows), fps (the page's own timing of the network at some sizes).
// Prints one JSON object on stdout; esnet_jax.browser_demo.driver runs it.
import { chromium } from 'playwright-core';

const FLAGS = [
  '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];

async function open(args, { fakeCamera = false, grantCamera = false } = {}) {
  const flags = [...FLAGS];
  if (fakeCamera) flags.push('--use-fake-device-for-media-stream');
  const browser = await chromium.launch({ executablePath: args.chromium, headless: true, args: flags });
  const context = await browser.newContext({ viewport: { width: 1100, height: 680 } });
  if (grantCamera) await context.grantPermissions(['camera'], { origin: new URL(args.url).origin });
  const page = await context.newPage();
  const console_ = [];
  page.on('console', (m) => console_.push(`${m.type()}: ${m.text()}`));
  page.on('pageerror', (e) => console_.push(`pageerror: ${e.message}`));
  await page.goto(args.url);
  await page.waitForFunction(() => ['ready', 'error'].includes(window.esnet?.state), null, { timeout: args.timeout_ms });
  const state = await page.evaluate(() => window.esnet.state);
  if (state === 'error') {
    throw new Error(`the page did not load: ${await page.evaluate(() => window.esnet.message)} | ${console_.join(' | ')}`);
  }
  return { browser, page, console_ };
}

// Waits for the page's answer to its input number `count` (window.esnet.inputs).
async function settle(page, timeout, count = 1) {
  await page.waitForFunction(
    (n) => window.esnet.inputs >= n && ['done', 'error', 'running'].includes(window.esnet.state),
    count, { timeout });
  return page.evaluate(() => ({ state: window.esnet.state, message: window.esnet.message }));
}

async function segment(args) {
  const { browser, page } = await open(args);
  try {
    await page.selectOption('#size', args.size);
    await page.setInputFiles('#file', args.image);
    const result = await settle(page, args.timeout_ms);
    if (result.state !== 'done') throw new Error(`the page shows: ${result.message}`);
    if (args.screenshot) await page.screenshot({ path: args.screenshot, fullPage: true });
    return await page.evaluate(() => {
      const { height, width, classes, ms } = window.esnet.last;
      let text = '';
      for (let i = 0; i < classes.length; i += 8192) text += String.fromCharCode(...classes.subarray(i, i + 8192));
      return {
        height, width, ms, classes_base64: btoa(text), backend: window.esnet.backend,
        threads: window.esnet.threads, isolated: self.crossOriginIsolated,
        legend: [...document.querySelectorAll('#legend li')].map((li) => li.textContent),
        user_agent: navigator.userAgent,
      };
    });
  } finally {
    await browser.close();
  }
}

async function fileMessage(page, path, timeout) {
  const count = (await page.evaluate(() => window.esnet.inputs)) + 1;
  await page.setInputFiles('#file', path);
  const result = await settle(page, timeout, count);
  const visible = await page.isVisible('#message');
  return { ...result, visible, ...(await liveFrames(page, timeout, result.state)) };
}

// For a video or camera that plays: waits for three more frames, then reads the FPS shown.
async function liveFrames(page, timeout, state) {
  if (state !== 'running') return {};
  const start = await page.evaluate(() => window.esnet.frames);
  await page.waitForFunction((n) => window.esnet.frames >= n + 3, start, { timeout });
  return { frames: await page.evaluate(() => window.esnet.frames) - start, fps_text: await page.textContent('#fps') };
}

async function inputs(args) {
  const out = {};
  let { browser, page } = await open(args);
  try {
    for (const [name, path] of Object.entries(args.files)) out[name] = await fileMessage(page, path, args.timeout_ms);
  } finally {
    await browser.close();
  }
  const cameras = {
    camera_refused: { fakeCamera: true, grantCamera: false },
    camera_missing: { fakeCamera: false, grantCamera: true },
    camera_live: { fakeCamera: true, grantCamera: true },
  };
  for (const [name, how] of Object.entries(cameras)) {
    ({ browser, page } = await open(args, how));
    try {
      await page.click('#camera');
      const result = await settle(page, args.timeout_ms);
      const visible = await page.isVisible('#message');
      out[name] = { ...result, visible, ...(await liveFrames(page, args.timeout_ms, result.state)) };
    } finally {
      await browser.close();
    }
  }
  return out;
}

async function fps(args) {
  const { browser, page } = await open(args);
  try {
    await page.setInputFiles('#file', args.image);
    const first = await settle(page, args.timeout_ms);
    if (first.state !== 'done') throw new Error(`the page shows: ${first.message}`);
    const rows = [];
    for (const size of args.sizes) {
      await page.selectOption('#size', size);
      await page.waitForFunction((s) => `${window.esnet.last?.height}x${window.esnet.last?.width}` === s, size, { timeout: args.timeout_ms });
      rows.push(await page.evaluate(([runs, warmup]) => window.esnet.benchmark(runs, warmup), [args.runs, args.warmup]));
    }
    return { rows, user_agent: await page.evaluate(() => navigator.userAgent) };
  } finally {
    await browser.close();
  }
}

const args = JSON.parse(process.argv[2]);
const tasks = { segment, inputs, fps };
if (!tasks[args.task]) {
  console.error(`unknown task ${args.task}: expected one of ${Object.keys(tasks).join(', ')}`);
  process.exit(2);
}
tasks[args.task](args).then(
  (result) => { process.stdout.write(JSON.stringify(result)); },
  (e) => { console.error(e.stack || String(e)); process.exit(1); },
);

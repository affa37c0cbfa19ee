// A real headless browser for Hearth's SMART launch tests: Debian's Chromium driven by
// playwright-core, so redirects, cookies, frames, CSP and scripts behave as they do for
// a clinician, not as a hand-written HTTP client imagines they do.
//
//   node tests/peers/smart/browser.mjs <scenario.json>
//
// Runs the scenario's steps in one fresh browser context (one page) and prints ONE
// JSON line on stdout: {"ok":…,"steps":[observation…],"error":…,"screenshot":…}.
// A failed expectation is a result, not a crash: ok=false, exit code 0, the steps
// stop there and the page is saved as failure.png next to the scenario. Only a
// usage error (no readable scenario) exits 2. See README.md for steps and fields.
import { readFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';

import { chromium } from 'playwright-core';

// stdout carries the result line only.
console.info = console.log = (...args) => console.error(...args);

const die = (msg) => {
  console.error(`browser.mjs: ${msg}`);
  process.exit(2);
};

if (process.argv.length !== 3) die('usage: node browser.mjs <scenario.json>');
const scenarioPath = resolve(process.argv[2]);
let scenario;
try {
  scenario = JSON.parse(readFileSync(scenarioPath, 'utf8'));
} catch (err) {
  die(`cannot read scenario ${scenarioPath}: ${err.message}`);
}
if (Array.isArray(scenario)) scenario = { steps: scenario };
if (!Array.isArray(scenario?.steps)) die('the scenario must be {"steps": [...]} or an array of steps');

const SCENARIO_TIMEOUT_MS = scenario.timeout_ms ?? 60000;
const EXPECT_TIMEOUT_MS = 10000;
const ACTION_TIMEOUT_MS = 10000;
const NAVIGATION_TIMEOUT_MS = 30000;
const TEXT_LIMIT = 20000;
const CHROMIUM = scenario.executable_path ?? '/usr/bin/chromium';
// This machine has no route out: without the background-networking flags Chromium
// keeps trying to reach Google services and stalls page loads.
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
];
const ACTIONS = [
  'goto', 'click', 'click_text', 'fill', 'press', 'wait_ms', 'reload',
  'expect_text', 'expect_url', 'frame', 'observe',
];

const sleep = (ms) => new Promise((r) => { setTimeout(r, ms); });

const result = { ok: true, steps: [] };
let browser;
let context;
let page;

// What happened since the previous step; reset after every observation.
let requests = [];
let consoleErrors = [];
let stepDocumentStatus = new Map(); // Frame -> status of its last document response in this step
const lastDocument = new Map(); // Frame -> { status, headers } of its last document response
const inflightDocuments = new Set();
let navigations = 0;

// The frame later steps act in: the main frame, or the iframe picked by the last
// `frame` step (selectors from the main frame down, re-resolved if a reload replaced it).
let frameSelectors = [];
let activeFrame;

async function resolveActiveFrame(timeout = ACTION_TIMEOUT_MS) {
  if (activeFrame && !activeFrame.isDetached()) return activeFrame;
  let frame = page.mainFrame();
  for (const selector of frameSelectors) {
    const handle = await frame.waitForSelector(selector, { state: 'attached', timeout });
    const inner = await handle.contentFrame();
    if (!inner) throw new Error(`${selector} is not an iframe`);
    frame = inner;
  }
  activeFrame = frame;
  return frame;
}

// After an action: wait until the frame has loaded and no document navigation
// (HTTP redirect chain, form auto-submit, script redirect) has started for a moment.
// Never fails the step; expectations do that.
async function settle(frame, timeout = NAVIGATION_TIMEOUT_MS) {
  const deadline = Date.now() + timeout;
  while (Date.now() < deadline) {
    const seen = navigations;
    await frame.waitForLoadState('load', { timeout: Math.max(1, deadline - Date.now()) }).catch(() => {});
    await sleep(250);
    if (navigations === seen && inflightDocuments.size === 0) return;
  }
}

// Navigation errors that only mean another navigation took over (a redirect by
// script, a download): the page is still going somewhere, so settle and carry on.
const superseded = (err) => /ERR_ABORTED|interrupted by another navigation|frame was detached/i.test(err.message);

async function visibleText(frame) {
  if (!frame) return '';
  return frame.evaluate(() => (document.body ? document.body.innerText : '')).catch(() => '');
}

// Polls `read` until `test` holds or the timeout passes; pages may be mid-navigation.
async function poll(read, test, timeout) {
  const deadline = Date.now() + timeout;
  let value;
  for (;;) {
    value = await read();
    if (test(value)) return { ok: true, value };
    if (Date.now() >= deadline) return { ok: false, value };
    await sleep(100);
  }
}

async function observe(index, step) {
  const frame = await resolveActiveFrame(2000).catch(() => page.mainFrame());
  const observation = {
    step: index,
    name: step.name ?? null,
    action: ACTIONS.find((a) => Object.hasOwn(step, a)) ?? null,
    url: frame.url(),
    status: stepDocumentStatus.get(frame) ?? null,
    title: await frame.title().catch(() => ''),
    text: (await visibleText(frame)).slice(0, TEXT_LIMIT),
    headers: lastDocument.get(frame)?.headers ?? {},
    cookies: (await context.cookies().catch(() => [])).map((c) => ({
      name: c.name,
      value: c.value,
      domain: c.domain,
      path: c.path,
      httpOnly: c.httpOnly,
      secure: c.secure,
      sameSite: c.sameSite,
      expires: c.expires,
    })),
    storage: await frame.evaluate(() => {
      const dump = (store) => Object.fromEntries(Object.keys(store).map((k) => [k, store.getItem(k)]));
      return { local: dump(window.localStorage), session: dump(window.sessionStorage) };
    }).catch((err) => ({ local: null, session: null, error: err.message.split('\n')[0] })),
    requests,
    console_errors: consoleErrors,
  };
  requests = [];
  consoleErrors = [];
  stepDocumentStatus = new Map();
  return observation;
}

async function runStep(step) {
  const frame = await resolveActiveFrame();
  const timeout = step.timeout_ms;
  if (Object.hasOwn(step, 'goto')) {
    try {
      await frame.goto(step.goto, { waitUntil: 'load', timeout: timeout ?? NAVIGATION_TIMEOUT_MS });
    } catch (err) {
      if (!superseded(err)) throw err;
    }
    await settle(frame);
  } else if (Object.hasOwn(step, 'click')) {
    await frame.click(step.click, { timeout: timeout ?? ACTION_TIMEOUT_MS });
    await settle(frame);
  } else if (Object.hasOwn(step, 'click_text')) {
    // A link or button with that accessible name wins over other elements showing
    // the same text (a login page's "Sign-in" heading above its "Sign-in" button).
    const text = step.click_text;
    const controls = frame.getByRole('link', { name: text }).or(frame.getByRole('button', { name: text }));
    const anything = frame.getByText(text, { exact: true });
    const found = await poll(
      async () => ((await controls.count()) > 0 ? controls : ((await anything.count()) > 0 ? anything : null)),
      (target) => target !== null,
      timeout ?? ACTION_TIMEOUT_MS,
    );
    if (!found.ok) throw new Error(`no link, button or element with the text ${JSON.stringify(text)}`);
    await found.value.first().click({ timeout: timeout ?? ACTION_TIMEOUT_MS });
    await settle(frame);
  } else if (Object.hasOwn(step, 'fill')) {
    await frame.fill(step.fill, String(step.value ?? ''), { timeout: timeout ?? ACTION_TIMEOUT_MS });
  } else if (Object.hasOwn(step, 'press')) {
    await page.keyboard.press(step.press);
    await settle(frame);
  } else if (Object.hasOwn(step, 'wait_ms')) {
    await sleep(Number(step.wait_ms));
  } else if (Object.hasOwn(step, 'reload')) {
    // Frames cannot be reloaded on their own: this reloads the whole page.
    try {
      await page.reload({ waitUntil: 'load', timeout: timeout ?? NAVIGATION_TIMEOUT_MS });
    } catch (err) {
      if (!superseded(err)) throw err;
    }
    await settle(page.mainFrame());
  } else if (Object.hasOwn(step, 'expect_text')) {
    const wanted = String(step.expect_text);
    const found = await poll(
      async () => visibleText(await resolveActiveFrame(1000).catch(() => null)),
      (t) => t.includes(wanted),
      timeout ?? EXPECT_TIMEOUT_MS,
    );
    if (!found.ok) throw new Error(`expected the page text to contain ${JSON.stringify(wanted)}`);
  } else if (Object.hasOwn(step, 'expect_url')) {
    const wanted = String(step.expect_url);
    const found = await poll(
      async () => (await resolveActiveFrame(1000).catch(() => null))?.url() ?? '',
      (u) => u.includes(wanted),
      timeout ?? EXPECT_TIMEOUT_MS,
    );
    if (!found.ok) throw new Error(`expected the URL to contain ${JSON.stringify(wanted)}, it is ${found.value}`);
  } else if (Object.hasOwn(step, 'frame')) {
    // Selectors start at the main frame; an array walks into nested iframes.
    frameSelectors = step.frame === null ? [] : [step.frame].flat();
    activeFrame = undefined;
    await resolveActiveFrame(timeout ?? ACTION_TIMEOUT_MS);
  } else if (!Object.hasOwn(step, 'observe')) {
    throw new Error(`unknown step ${JSON.stringify(step)} (one of ${ACTIONS.join(', ')})`);
  }
}

async function run() {
  browser = await chromium.launch({ executablePath: CHROMIUM, args: CHROMIUM_ARGS, headless: true });
  context = await browser.newContext();
  page = await context.newPage();
  page.on('request', (request) => {
    requests.push({ method: request.method(), url: request.url(), resource_type: request.resourceType() });
    if (request.isNavigationRequest()) inflightDocuments.add(request);
  });
  const done = (request) => inflightDocuments.delete(request);
  page.on('requestfinished', done);
  page.on('requestfailed', done);
  page.on('response', (response) => {
    const request = response.request();
    if (!request.isNavigationRequest()) return;
    let frame;
    try {
      frame = response.frame();
    } catch {
      return; // a service worker's navigation: no frame to attach it to
    }
    stepDocumentStatus.set(frame, response.status());
    const entry = { status: response.status(), headers: response.headers() };
    lastDocument.set(frame, entry);
    // allHeaders() also has the ones headers() leaves out (Set-Cookie, …).
    response.allHeaders().then((all) => { entry.headers = all; }).catch(() => {});
  });
  page.on('framenavigated', () => { navigations += 1; });
  page.on('console', (message) => {
    if (message.type() !== 'error') return;
    // Chromium asks every site for /favicon.ico on its own; a 404 there is not the page's.
    if (/\/favicon\.ico$/.test(URL.parse(message.location().url)?.pathname ?? '')) return;
    consoleErrors.push(message.text());
  });
  page.on('pageerror', (err) => { consoleErrors.push(`uncaught: ${err.message}`); });
  page.on('dialog', (dialog) => { dialog.dismiss().catch(() => {}); });
  activeFrame = page.mainFrame();

  for (const [index, step] of scenario.steps.entries()) {
    let failure;
    try {
      await runStep(step);
    } catch (err) {
      failure = err.message.split('\n')[0];
    }
    const observation = await observe(index, step);
    if (failure) observation.error = failure;
    result.steps.push(observation);
    if (failure) {
      result.ok = false;
      result.error = `step ${index}${step.name ? ` (${step.name})` : ''}: ${failure}`;
      return;
    }
  }
}

async function screenshot() {
  if (!page) return;
  const path = join(dirname(scenarioPath), 'failure.png');
  try {
    await page.screenshot({ path, fullPage: true, timeout: 5000 });
    result.screenshot = path;
  } catch (err) {
    console.error(`browser.mjs: no screenshot: ${err.message}`);
  }
}

let timer;
const timedOut = new Promise((resolveTimeout) => {
  timer = setTimeout(() => resolveTimeout(true), SCENARIO_TIMEOUT_MS);
});
// After a timeout the steps may still be running; they fail once the browser is
// closed, and that must not surface as an unhandled rejection.
const running = run();
running.catch(() => {});
try {
  const expired = await Promise.race([running.then(() => false), timedOut]);
  if (expired) {
    result.ok = false;
    result.error = `scenario timed out after ${SCENARIO_TIMEOUT_MS} ms (at step ${result.steps.length})`;
  }
} catch (err) {
  result.ok = false;
  result.error = err.message.split('\n')[0];
}
clearTimeout(timer);
if (!result.ok) await screenshot();
// Never leave a Chromium behind, even if closing hangs.
const killer = setTimeout(() => {
  process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));
}, 10000);
await browser?.close().catch(() => {});
clearTimeout(killer);
process.stdout.write(`${JSON.stringify(result)}\n`, () => process.exit(0));

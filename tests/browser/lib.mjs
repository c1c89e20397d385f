// Shared set-up for the browser scenarios: Debian's chromium (never a downloaded
// browser) driven by playwright-core, a fresh profile per run, screenshots, and a
// scenario wrapper that always closes the browser and sets the exit code.
//
// A scenario file is run as: node <scenario>.mjs <gateway base URL> <screenshot dir>
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import {chromium} from 'playwright-core';

export const CHROMIUM = process.env.OMS_CHROMIUM || '/usr/bin/chromium';
// Headless on a machine without network access: without the background-networking
// flags Chromium floods the closed network with refused connections.
export const FLAGS = ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
  '--disable-background-networking', '--disable-component-update', '--disable-sync',
  '--disable-dev-shm-usage'];
// Headless chromium on 2 cores (and services under ASan) is slow: generous waits, all polled.
export const WAIT_MS = Number(process.env.OMS_BROWSER_WAIT_MS || 60000);
const HARD_LIMIT_MS = Number(process.env.OMS_BROWSER_SCENARIO_MS || 240000);

// Runs in every page before its own scripts: records each status the status page shows
// and each column a ticket appears in on the kitchen display, so a test can tell what
// was on screen on the way (a step that lasts 1.5 s is seen, not guessed).
const RECORDER = `
window.__omsSeen = [];
window.__omsTickets = {};
document.addEventListener('DOMContentLoaded', () => {
  const s = document.getElementById('status');
  if (s) new MutationObserver(() => {
    const v = s.dataset.status;
    if (v && window.__omsSeen[window.__omsSeen.length - 1] !== v) window.__omsSeen.push(v);
  }).observe(s, {attributes: true, attributeFilter: ['data-status']});
  const board = document.querySelector('.board');
  if (board) new MutationObserver(() => {
    for (const li of board.querySelectorAll('.ticket')) {
      const a = (window.__omsTickets[li.dataset.order] = window.__omsTickets[li.dataset.order] || []);
      if (a[a.length - 1] !== li.dataset.state) a.push(li.dataset.state);
    }
  }).observe(board, {childList: true, subtree: true});
});`;

export function assert(cond, msg) {
  if (!cond) throw new Error('assertion failed: ' + msg);
}

export async function scenario(name, fn) {
  const [gateway, outdir] = process.argv.slice(2);
  if (!gateway || !outdir) {
    console.error(`usage: node ${name}.mjs <gateway base URL> <screenshot dir>`);
    process.exit(2);
  }
  fs.mkdirSync(outdir, {recursive: true});
  const profile = fs.mkdtempSync(path.join(os.tmpdir(), 'oms-chromium-'));
  const started = Date.now();
  const problems = [];   // uncaught page errors and requests leaving this machine
  let ctx = null, code = 1;
  const hard = setTimeout(() => {
    console.error(`FAIL - ${name}: scenario took longer than ${HARD_LIMIT_MS} ms`);
    // Playwright kills the browser it launched when node exits.
    process.exit(3);
  }, HARD_LIMIT_MS);
  const log = (...a) => console.log(`[${name} +${((Date.now() - started) / 1000).toFixed(1)}s]`, ...a);
  try {
    ctx = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true, args: FLAGS,
      viewport: {width: 1280, height: 900}, timeout: WAIT_MS, locale: 'en-US',
    });
    ctx.setDefaultTimeout(WAIT_MS);
    ctx.setDefaultNavigationTimeout(WAIT_MS);
    await ctx.addInitScript(RECORDER);
    const watch = page => {
      page.on('pageerror', e => problems.push(`uncaught error on ${page.url()}: ${e.message}`));
      page.on('console', m => { if (m.type() === 'error') log(`console error on ${page.url()}: ${m.text()}`); });
      page.on('request', r => {
        const u = new URL(r.url());
        if (/^https?:$/.test(u.protocol) && !['127.0.0.1', 'localhost'].includes(u.hostname))
          problems.push(`request off this machine (pages must work offline): ${r.url()}`);
      });
    };
    ctx.on('page', watch);
    ctx.pages().forEach(watch);
    const shots = [];
    const t = {
      gateway, outdir, ctx, log, problems,
      async page(viewport) {
        const p = ctx.pages().find(x => x.url() === 'about:blank' && !x.__used) || await ctx.newPage();
        p.__used = true;
        if (viewport) await p.setViewportSize(viewport);
        return p;
      },
      async shot(page, file) {
        const f = path.join(outdir, file);
        await page.screenshot({path: f, fullPage: true});
        shots.push(f);
        log('screenshot', f);
      },
      // Signs this browser in as staff (the shop's admin, OMS_STAFF_PASSWORD from the
      // test) through the sign-in page; every page of the context shares the cookie.
      async signIn(page, next = '/staff/') {
        await page.goto(gateway + '/staff/login.html?next=' + encodeURIComponent(next));
        await page.getByLabel('Name').fill('admin');
        await page.getByLabel('Password').fill(process.env.OMS_STAFF_PASSWORD || '');
        await page.getByRole('button', {name: 'Sign in'}).click();
        await page.waitForURL(u => new URL(u).pathname === next);
      },
      // The gateway's API from node (for set-up and competing customers).
      async api(method, p, body) {
        const r = await fetch(gateway + p, {method, headers: body ? {'Content-Type': 'application/json'} : {},
                                            body: body ? JSON.stringify(body) : undefined});
        const text = await r.text();
        let json = null;
        try { json = JSON.parse(text); } catch (e) { json = text; }
        return {status: r.status, headers: r.headers, body: json};
      },
    };
    await fn(t);
    assert(problems.length === 0, 'page problems:\n  ' + problems.join('\n  '));
    assert(shots.length > 0, 'every scenario saves at least one screenshot');
    code = 0;
    log(`ok (${((Date.now() - started) / 1000).toFixed(1)} s)`);
  } catch (e) {
    console.error(`FAIL - ${name}: ${e && e.stack ? e.stack : e}`);
    if (problems.length) console.error('page problems:\n  ' + problems.join('\n  '));
    if (ctx) {
      let i = 0;
      for (const p of ctx.pages()) {
        i++;
        try {
          const f = path.join(outdir, `${name}-failure-${i}.png`);
          await p.screenshot({path: f, fullPage: true, timeout: 10000});
          console.error(`failure screenshot ${f} (${p.url()})`);
        } catch (e2) { /* the page may be gone */ }
      }
    }
  } finally {
    clearTimeout(hard);
    if (ctx) await ctx.close().catch(() => {});
    fs.rmSync(profile, {recursive: true, force: true});
  }
  process.exitCode = code;
}

// Waits until fn() (run in the page) returns truthy, polling every 100 ms.
export function until(page, fn, arg, timeout = WAIT_MS) {
  return page.waitForFunction(fn, arg, {timeout, polling: 100});
}

export async function text(page, selector) {
  return (await page.locator(selector).innerText()).trim();
}

// Horizontal overflow check for phone widths: nothing wider than the viewport.
export async function noSideScroll(page, width) {
  const w = await page.evaluate(() => Math.max(document.documentElement.scrollWidth, document.body.scrollWidth));
  assert(w <= width, `${page.url()} is ${w} px wide at a ${width} px viewport (sideways scrolling)`);
}

// Every form control and button has an accessible name (a label or an aria-label).
export async function labelled(page) {
  const missing = await page.evaluate(() => {
    const out = [];
    for (const e of document.querySelectorAll('input, select, textarea, button, a[href]')) {
      if (e.type === 'hidden' || e.closest('[hidden]')) continue;
      const name = (e.getAttribute('aria-label') || '').trim() ||
        (e.labels && [...e.labels].map(l => l.textContent).join(' ').trim()) ||
        (e.getAttribute('aria-labelledby') || '').split(' ').map(id => document.getElementById(id)?.textContent || '').join('').trim() ||
        (e.textContent || '').trim() || (e.getAttribute('title') || '').trim();
      if (!name) out.push(e.outerHTML.slice(0, 120));
    }
    return out;
  });
  assert(missing.length === 0, `${page.url()}: controls without an accessible name:\n  ` + missing.join('\n  '));
}

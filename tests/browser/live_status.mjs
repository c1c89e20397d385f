// The status page follows an order through the server's event stream (no polling
// while it works), and still gets there by polling when the stream is blocked.
import {scenario, assert, until, WAIT_MS} from './lib.mjs';

const CHAIN = ['pending', 'waiting_payment', 'paid', 'cooking', 'ready for pick-up'];

// Orders one Cheese for customer through the API, opens its status page on page (with
// the requests to the order's URLs counted), pays through the checkout page and waits
// for Ready. Returns {polls, streams, seen}.
async function follow(t, page, customer) {
  const res = await t.api('POST', `/api/customers/${customer}/orders`, {items: [{productID: '1', quantity: 1}]});
  assert(res.status === 201, `order placed: ${res.status} ${JSON.stringify(res.body)}`);
  const orderID = res.body.order.orderID;
  const base = `/api/customers/${customer}/orders/${orderID}`;
  const counts = {polls: 0, streams: 0};
  page.on('request', r => {
    const p = new URL(r.url()).pathname;
    if (p === base) counts.polls++;
    if (p === base + '/events') counts.streams++;
  });
  await page.goto(`${t.gateway}/success.html?customerID=${customer}&orderID=${orderID}`);
  const pay = page.getByRole('link', {name: 'Go to payment'});
  await pay.waitFor({state: 'visible'});
  await pay.click();
  await page.waitForURL(/\/checkout\/[^/]+$/);
  await page.getByRole('button', {name: 'Pay', exact: true}).click();
  await page.waitForURL(/\/success\.html\?customerID=/);
  await until(page, () => document.getElementById('status').dataset.status === 'ready for pick-up', null,
              WAIT_MS * 2);
  const seen = await page.evaluate(() => window.__omsSeen);
  const ranks = seen.map(s => CHAIN.indexOf(s));
  assert(ranks.every((r, i) => r >= 0 && (i === 0 || r > ranks[i - 1])), `statuses only move forward: ${seen}`);
  return {...counts, seen};
}

await scenario('live_status', async t => {
  const live = await t.page();
  const a = await follow(t, live, 'browser-live');
  t.log('with the stream', JSON.stringify(a));
  assert(a.streams >= 1, 'the page opened the event stream');
  assert(a.polls === 0, `no polling while the stream works (${a.polls} GETs)`);
  assert(a.seen.includes('paid') || a.seen.includes('cooking'), `steps between were shown: ${a.seen}`);
  await t.shot(live, 'live-status-1-stream.png');

  const blocked = await t.page();
  await blocked.route('**/events', route => route.abort());
  const b = await follow(t, blocked, 'browser-blocked');
  t.log('stream blocked', JSON.stringify(b));
  assert(b.streams >= 1, 'the page tried the stream');
  assert(b.polls >= 2, `it fell back to polling (${b.polls} GETs)`);
  await t.shot(blocked, 'live-status-2-polling.png');
});

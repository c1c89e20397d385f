// Order two items from the storefront, pay on the local checkout, watch the status
// page go through Cooking to Ready for pick-up, while the kitchen display (another
// tab) shows the same ticket move from cooking to ready under the same pickup code;
// left uncollected it turns late; staff hand it over and the customer's page says
// Collected.
import {scenario, assert, until, text, WAIT_MS} from './lib.mjs';

const CHAIN = ['pending', 'waiting_payment', 'paid', 'cooking', 'ready for pick-up'];

await scenario('journey', async t => {
  const kitchen = await t.page();
  await t.signIn(kitchen, '/kitchen');
  await kitchen.getByRole('heading', {name: 'Kitchen display'}).waitFor();
  await until(kitchen, () => /Updated/.test(document.getElementById('updated').textContent));

  const page = await t.page();
  await page.goto(t.gateway + '/');
  await page.getByRole('button', {name: 'Add one Cheese'}).waitFor();
  const customer = page.getByLabel('Your customer id');
  await customer.fill('browser-journey');
  await page.getByRole('button', {name: 'Add one Cheese'}).click();
  await page.getByRole('button', {name: 'Add one Cheese'}).click();
  await page.getByRole('button', {name: 'Add one Sourdough bread'}).click();
  const total = await text(page, '#total');
  assert(total.includes('14.20'), `cart total 2 x 4.50 + 5.20 shows 14.20, got ${total}`);
  await page.getByRole('button', {name: 'Place order'}).click();

  await page.waitForURL(/\/success\.html\?customerID=browser-journey&orderID=[^&]+$/);
  const orderID = new URL(page.url()).searchParams.get('orderID');
  t.log('order', orderID);
  const pay = page.getByRole('link', {name: 'Go to payment'});
  await pay.waitFor({state: 'visible'});
  assert(await page.getByRole('button', {name: 'Cancel order'}).isVisible(), 'Cancel is offered before payment');
  assert((await text(page, '#status')) === 'Waiting for payment', 'status says Waiting for payment');
  assert((await text(page, '#total')).includes('14.20'), 'status page shows the total');
  await t.shot(page, 'journey-1-waiting-payment.png');

  await pay.click();
  await page.waitForURL(/\/checkout\/[^/]+$/);
  const body = await page.locator('main').innerText();
  for (const want of ['Cheese', 'Sourdough bread', '$14.20'])
    assert(body.includes(want), `checkout page shows ${want}: ${body}`);
  await t.shot(page, 'journey-2-checkout.png');
  await page.getByRole('button', {name: 'Pay', exact: true}).click();

  // The 303 from payments lands back on the status page.
  await page.waitForURL(/\/success\.html\?customerID=browser-journey&orderID=/);
  assert(new URL(page.url()).searchParams.get('orderID') === orderID, 'back on the same order');
  await until(page, () => document.getElementById('status').dataset.status === 'ready for pick-up', null,
              WAIT_MS * 2);
  const seen = await page.evaluate(() => window.__omsSeen);
  t.log('status page showed', JSON.stringify(seen));
  assert(seen.includes('cooking'), `"Cooking" was shown on the way: ${seen}`);
  const ranks = seen.map(s => CHAIN.indexOf(s));
  assert(ranks.every((r, i) => r >= 0 && (i === 0 || r > ranks[i - 1])), `statuses only move forward: ${seen}`);
  assert((await text(page, '#status')) === 'Ready for pick-up', 'status says Ready for pick-up');
  const pickup = await text(page, '#pickup');
  assert(/^[ACDEFGHJKMNPQRTUVWXY34679]{4}$/.test(pickup), `a 4-symbol pickup code: ${pickup}`);
  assert((await text(page, '#fullid')) === orderID, 'the full order id stays for support');
  assert(!(await page.getByRole('button', {name: 'Cancel order'}).isVisible()), 'no Cancel after payment');
  assert(!(await page.getByRole('link', {name: 'Go to payment'}).isVisible()), 'no payment button after payment');
  const current = await page.locator('#steps li[aria-current="step"]').innerText();
  assert(current.startsWith('Ready for pick-up'), `step indicator marks Ready: ${current}`);
  await t.shot(page, 'journey-3-ready.png');

  // The kitchen display saw the ticket cooking, then moved it to the ready column.
  await until(kitchen, id => !!document.querySelector(`#col-ready [data-order="${id}"]`), orderID);
  const moves = await kitchen.evaluate(id => window.__omsTickets[id], orderID);
  t.log('kitchen display showed', JSON.stringify(moves));
  assert(moves.includes('cooking') && moves[moves.length - 1] === 'ready',
         `ticket moved from cooking to ready on the display: ${moves}`);
  const ticket = await kitchen.locator(`#col-ready [data-order="${orderID}"]`).innerText();
  assert(ticket.includes(pickup) && ticket.includes('2 × Cheese') &&
         ticket.includes('1 × Sourdough bread'), `ticket shows number and items: ${ticket}`);
  assert(/ready \d+ s ago/.test(ticket), `ticket shows its age: ${ticket}`);
  await t.shot(kitchen, 'journey-4-kitchen.png');

  // Nobody collects it: past the pick-up window (PICKUP_WINDOW in this shop) the ticket
  // turns late: another colour and the words "Not collected".
  const sel = `#col-ready [data-order="${orderID}"]`;
  const normal = await kitchen.evaluate(() => {   // a ready ticket that is not late
    const e = document.createElement('li'); e.className = 'ticket ready';
    document.body.append(e); const c = getComputedStyle(e).backgroundColor; e.remove(); return c;
  });
  await until(kitchen, s => !!document.querySelector(s + '.late'), sel);
  const lateCard = kitchen.locator(sel);
  assert((await lateCard.innerText()).includes('Not collected'), 'a late ready ticket says Not collected');
  assert((await lateCard.getAttribute('aria-label')).endsWith(', late'), 'and is announced late');
  const after = await lateCard.evaluate(e => getComputedStyle(e).backgroundColor);
  assert(after !== normal && after === 'rgb(253, 236, 234)', `a late ticket changes colour (${normal} -> ${after})`);
  await t.shot(kitchen, 'journey-5-kitchen-late.png');

  // The back office's order list flags it too.
  await kitchen.goto(`${t.gateway}/staff/orders.html?orderID=${orderID}`);
  const line = kitchen.locator(`#orders li[data-order="${orderID}"]`);
  await line.waitFor();
  await until(kitchen, id => /Not collected/.test(document.querySelector(`#orders li[data-order="${id}"]`).textContent),
              orderID);
  await kitchen.goto(`${t.gateway}/kitchen`);
  await kitchen.locator(sel).waitFor();

  // The hand-over: a big "Handed over" on the ticket; it leaves the display and the
  // customer's page says Collected.
  await kitchen.getByRole('button', {name: `Handed over: order ${pickup}`}).click();
  await until(kitchen, s => !document.querySelector(s), sel);
  assert((await text(kitchen, '#handover-msg')).includes(pickup), 'the display confirms the hand-over');
  await until(page, () => document.getElementById('status').dataset.status === 'collected', null, WAIT_MS * 2);
  assert((await text(page, '#status')) === 'Collected', 'the customer sees Collected');
  const step = await page.locator('#steps li[data-step="collected"]').getAttribute('class');
  assert(step.includes('done'), `the last step is done: ${step}`);
  await t.shot(page, 'journey-6-collected.png');
});

// The back office's order pages: a customer orders and pays; staff sign in, find the
// order, read its history and refund it with a reason; the customer's status page then
// says Refunded. Today's figures (with the per-hour chart) and the audit show it, and
// every page works at 360 px without sideways scrolling.
import {scenario, assert, until, text, noSideScroll, labelled, WAIT_MS} from './lib.mjs';

await scenario('backoffice_orders', async t => {
  // A customer places and pays an order.
  const shopper = await t.page();
  await shopper.goto(t.gateway + '/');
  await shopper.getByRole('button', {name: 'Add one Cheese'}).waitFor();
  await shopper.getByLabel('Your customer id').fill('browser-refund');
  await shopper.getByRole('button', {name: 'Add one Cheese'}).click();
  await shopper.getByRole('button', {name: 'Place order'}).click();
  await shopper.waitForURL(/\/success\.html\?customerID=browser-refund&orderID=[^&]+$/);
  const orderID = new URL(shopper.url()).searchParams.get('orderID');
  t.log('order', orderID);
  const pay = shopper.getByRole('link', {name: 'Go to payment'});
  await pay.waitFor({state: 'visible'});
  await pay.click();
  await shopper.getByRole('button', {name: 'Pay', exact: true}).click();
  await shopper.waitForURL(/\/success\.html\?/);
  await until(shopper, () => document.getElementById('status').dataset.status === 'ready for pick-up', null,
              WAIT_MS * 2);

  // Staff find it by its id and read its history.
  const staff = await t.page();
  await t.signIn(staff, '/staff/orders.html');
  await staff.getByLabel('Order id').fill(orderID);
  await staff.getByRole('button', {name: 'Search'}).click();
  await staff.locator(`#orders li[data-order="${orderID}"]`).waitFor();
  await staff.locator('#detail:not([hidden])').waitFor();
  const facts = await text(staff, '#facts');
  assert(facts.includes(orderID) && facts.includes('browser-refund') && facts.includes('Ready for pick-up'),
         `the order's facts: ${facts}`);
  const history = await staff.locator('#history li').evaluateAll(ls => ls.map(l => l.dataset.status));
  assert(history[0] === 'pending' && history[history.length - 1] === 'ready for pick-up',
         `history oldest first: ${history}`);
  assert((await text(staff, '#history')).includes('created'), 'history shows causes');
  await t.shot(staff, 'backoffice-1-order.png');

  // A refund needs a reason; then it is done and shown.
  await staff.getByRole('button', {name: 'Refund…'}).click();
  await staff.getByRole('button', {name: 'Refund the order'}).click();
  assert((await text(staff, '#reason-error')).length > 0, 'an empty reason is refused on the page');
  await staff.getByLabel('Why is this order refunded?').fill('Dropped on the floor');
  await staff.getByRole('button', {name: 'Refund the order'}).click();
  await until(staff, () => /refunded/.test(document.getElementById('done').textContent));
  await until(staff, () => document.querySelector('#history li:last-child')?.dataset.status === 'refunded');
  const last = await text(staff, '#history li:last-child');
  assert(last.includes('staff admin: Dropped on the floor'), `the refund's cause: ${last}`);
  assert(await staff.locator('#refund-box').isHidden(), 'no second refund offered');
  await t.shot(staff, 'backoffice-2-refunded.png');

  // The customer's status page says Refunded.
  await shopper.reload();
  await until(shopper, () => document.getElementById('status').dataset.status === 'refunded');
  assert((await text(shopper, '#status')) === 'Refunded', 'customer sees Refunded');
  await t.shot(shopper, 'backoffice-3-customer.png');

  // Today's figures and the chart.
  await staff.goto(t.gateway + '/staff/today.html');
  await staff.locator('#per-hour').waitFor();
  const label = await staff.locator('#per-hour').getAttribute('aria-label');
  assert(/Orders per hour on \d{4}-\d{2}-\d{2}: \d+ in all, busiest hour \d\d:00/.test(label), `chart summary: ${label}`);
  assert((await staff.locator('#per-hour').getAttribute('role')) === 'img', 'the chart is an image');
  const bars = await staff.locator('#per-hour rect.bar').count();
  assert(bars === 24, `24 bars, got ${bars}`);
  const figures = await text(staff, '#figures');
  assert(/Refunds\s*[1-9]/.test(figures), `a refund today: ${figures}`);
  assert((await text(staff, '#units')).includes('Cheese'), 'Cheese sold today');
  await t.shot(staff, 'backoffice-4-today.png');

  // The audit shows the refund, newest first.
  await staff.goto(t.gateway + '/staff/audit.html');
  const entry = staff.locator(`#entries li[data-subject="${orderID}"]`);
  await entry.waitFor();
  const e = await entry.innerText();
  assert(e.includes('Refunded an order') && e.includes('admin') && e.includes('Dropped on the floor') &&
         e.includes('refunded'), `audit entry: ${e}`);
  await t.shot(staff, 'backoffice-5-audit.png');

  // Phone width: no sideways scrolling, every control named.
  const phone = await t.page({width: 360, height: 740});
  for (const [path, ready, file] of [
    [`/staff/orders.html?orderID=${orderID}`, '#detail:not([hidden])', 'backoffice-6-orders-360.png'],
    ['/staff/today.html', '#per-hour', 'backoffice-7-today-360.png'],
    ['/staff/audit.html', '#entries li', 'backoffice-8-audit-360.png'],
  ]) {
    await phone.goto(t.gateway + path);
    await phone.locator(ready).first().waitFor();
    await noSideScroll(phone, 360);
    await labelled(phone);
    await t.shot(phone, file);
  }
});

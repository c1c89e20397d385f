// My orders: the customer's orders newest first, paginated, each linking to its
// status page.
import {scenario, assert, until} from './lib.mjs';

await scenario('orders', async t => {
  const ids = [];
  for (let i = 0; i < 7; i++) {
    const r = await t.api('POST', '/api/customers/browser-orders/orders', {items: [{productID: '6', quantity: i + 1}]});
    assert(r.status === 201, `order ${i}: ${r.status} ${JSON.stringify(r.body)}`);
    ids.push(r.body.order.orderID);
  }
  const page = await t.page();
  // Listing a customer's orders is for staff (the shop has no customer sign-in here).
  await t.signIn(page);
  await page.goto(t.gateway + '/orders.html?customerID=browser-orders&pageSize=3');
  const rows = page.locator('#orders > li');
  await until(page, () => document.querySelectorAll('#orders > li').length === 3);
  const more = page.getByRole('button', {name: 'Show older orders'});
  await more.click();
  await until(page, () => document.querySelectorAll('#orders > li').length === 6);
  await more.click();
  await until(page, () => document.querySelectorAll('#orders > li').length === 7);
  assert(await more.isHidden(), 'no more pages after the last');
  const shown = await rows.evaluateAll(lis => lis.map(li => li.dataset.order));
  assert(JSON.stringify(shown) === JSON.stringify([...ids].reverse()), `newest first: ${shown} vs ${ids}`);
  assert((await rows.first().innerText()).includes('7 × Apple pie'), 'rows show their items');
  assert((await page.locator('#list-status').innerText()).includes('7 orders shown'), 'count is stated');
  await t.shot(page, 'my-orders.png');

  // Each links to its status page.
  await rows.first().getByRole('link').click();
  await page.waitForURL(/\/success\.html\?customerID=browser-orders&orderID=/);
  assert(new URL(page.url()).searchParams.get('orderID') === ids[6], 'the newest order opened');
  await until(page, () => ['pending', 'waiting_payment'].includes(document.getElementById('status').dataset.status));

  // Another customer id from the form; an unknown customer has no orders.
  await page.goto(t.gateway + '/orders.html');
  await page.getByLabel('Customer id').fill('nobody-here');
  await page.getByRole('button', {name: 'Show orders'}).click();
  await until(page, () => document.getElementById('list-status').textContent.includes('No orders yet'));
  assert(new URL(page.url()).searchParams.get('customerID') === 'nobody-here', 'the address follows the form');

  // Signed out, the list comes from what this browser placed: none of these orders.
  const out = await t.api('GET', '/api/customers/browser-orders/orders');
  assert(out.status === 401, `a stranger cannot list a customer's orders: ${out.status}`);
  await page.getByRole('link', {name: 'Staff'}).count();
  await page.goto(t.gateway + '/staff/');
  await page.getByRole('button', {name: 'Sign out'}).click();
  await page.waitForURL(/\/staff\/login\.html/);
  await page.goto(t.gateway + '/orders.html?customerID=browser-orders');
  await until(page, () => document.getElementById('list-status').textContent.includes('placed from this browser'));
  assert(await rows.count() === 0, 'no orders of this customer were placed from this browser');
});

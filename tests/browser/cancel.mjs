// Cancel before payment: the status page offers Cancel while the order waits for
// payment; after it the page says Cancelled and offers neither payment nor cancel.
import {scenario, assert, until, text} from './lib.mjs';

await scenario('cancel', async t => {
  const page = await t.page();
  await page.goto(t.gateway + '/');
  await page.getByRole('button', {name: 'Add one Flat white'}).waitFor();
  await page.getByLabel('Your customer id').fill('browser-cancel');
  await page.getByRole('button', {name: 'Add one Flat white'}).click();
  await page.getByRole('button', {name: 'Place order'}).click();
  await page.waitForURL(/\/success\.html\?customerID=browser-cancel&orderID=/);
  const orderID = new URL(page.url()).searchParams.get('orderID');
  await page.getByRole('link', {name: 'Go to payment'}).waitFor();
  const cancel = page.getByRole('button', {name: 'Cancel order'});
  assert(await cancel.isVisible(), 'Cancel is offered while waiting for payment');
  await cancel.click();
  await until(page, () => document.getElementById('status').dataset.status === 'cancelled');
  assert((await text(page, '#status')) === 'Cancelled', 'status says Cancelled');
  assert((await text(page, '#explain')).includes('not been charged'), 'says nothing was charged');
  assert(!(await cancel.isVisible()), 'no Cancel button any more');
  assert(!(await page.getByRole('link', {name: 'Go to payment'}).isVisible()), 'no payment button any more');
  const o = await t.api('GET', `/api/customers/browser-cancel/orders/${orderID}`);
  assert(o.body.status === 'cancelled', `the API agrees: ${o.body.status}`);
  await t.shot(page, 'cancel.png');
  // Only a checked link goes into href: https, or http to this host / localhost.
  const links = await page.evaluate(() => ['javascript:alert(1)', 'data:text/html,x', 'http://evil.example/x',
    'https://checkout.stripe.com/c/pay/cs_1', location.origin + '/checkout/x'].map(OMS.safeLink));
  assert(links[0] === null && links[1] === null && links[2] === null, `unsafe links refused: ${links}`);
  assert(links[3] === 'https://checkout.stripe.com/c/pay/cs_1' && links[4] !== null, `safe links kept: ${links}`);

  // The checkout link of a cancelled order no longer takes money.
  await page.goto(o.body.PaymentLink);
  const body = await page.locator('main').innerText();
  assert(/closed|cancel/i.test(body) && !(await page.getByRole('button', {name: 'Pay', exact: true}).count()),
         `checkout is closed after cancelling: ${body}`);
  await page.getByRole('link', {name: "See the order's status"}).click();
  await until(page, () => document.getElementById('status').dataset.status === 'cancelled');
});

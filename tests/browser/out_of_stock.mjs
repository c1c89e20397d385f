// Ordering more than is in stock: the storefront says, in words next to the form,
// which product is short and how many are left; sold-out items cannot be added;
// an invalid customer id is refused before anything is sent.
import {scenario, assert, until, text} from './lib.mjs';

await scenario('out_of_stock', async t => {
  const page = await t.page();
  await page.goto(t.gateway + '/');
  const addChoc = page.getByRole('button', {name: 'Add one Chocolate'});
  await addChoc.waitFor();

  // Sold out: shown as such, and its + button is disabled.
  const truffle = page.locator('#menu li', {hasText: 'Truffle cake'});
  assert((await truffle.innerText()).includes('Sold out'), 'Truffle cake shows Sold out');
  assert(await page.getByRole('button', {name: 'Add one Truffle cake'}).isDisabled(), 'sold-out + is disabled');
  assert((await page.locator('#menu li', {hasText: 'Chocolate'}).innerText()).includes('7 left'), 'Chocolate: 7 left');

  // Keyboard only: nine Enters on "+" for the seven Chocolates on the shelf put seven in
  // the cart; "+" keeps the focus at the limit (aria-disabled, not disabled) and says why.
  await addChoc.focus();
  for (let i = 0; i < 9; i++) await page.keyboard.press('Enter');
  const inCart = () => page.getByLabel('Chocolate in cart').innerText();
  assert((await inCart()) === '7', `7 Chocolate in the cart after 9 presses, got ${await inCart()}`);
  const focused = await page.evaluate(() => document.activeElement.getAttribute('aria-label'));
  assert(focused === 'Add one Chocolate', `the focus stays on + at the limit (on ${focused})`);
  assert((await addChoc.getAttribute('aria-disabled')) === 'true', '+ is aria-disabled at the limit');
  assert((await text(page, '#stepper-status')).includes('Only 7 Chocolate left'), 'the limit is said');
  assert((await page.locator('#menu li[data-product="2"]').innerText()).includes('Only 7 left'), 'and shown');
  await t.shot(page, 'stepper-limit.png');
  const less = page.getByRole('button', {name: 'Remove one Chocolate'});
  await less.focus();
  for (let i = 0; i < 8; i++) await page.keyboard.press('Enter');
  assert((await page.locator('#menu li[data-product="2"] output').innerText()) === '0', 'emptied by keyboard');
  assert((await page.evaluate(() => document.activeElement.getAttribute('aria-label'))) === 'Remove one Chocolate',
         'the focus stays on − at zero');

  // The customer id is checked like the API checks it.
  await page.getByLabel('Your customer id').fill('not valid!');
  await addChoc.click();
  await page.getByRole('button', {name: 'Place order'}).click();
  await until(page, () => document.getElementById('customer-error').textContent.length > 0);
  assert((await page.getByLabel('Your customer id').getAttribute('aria-invalid')) === 'true', 'field marked invalid');
  assert((await text(page, '#customer-error')).includes('letters, digits'), 'says what is allowed');
  assert(new URL(page.url()).pathname === '/', 'nothing was ordered');

  await page.getByLabel('Your customer id').fill('browser-oos');
  for (let i = 0; i < 4; i++) await addChoc.click();       // 5 in the cart, 7 on the shelf
  assert((await page.getByLabel('Chocolate in cart').innerText()) === '5', '5 Chocolate in the cart');

  // Meanwhile someone else buys 4 of the 7.
  const other = await t.api('POST', '/api/customers/someone-else/orders', {items: [{productID: '2', quantity: 4}]});
  assert(other.status === 201, `the other customer's order: ${other.status} ${JSON.stringify(other.body)}`);

  await page.getByRole('button', {name: 'Place order'}).click();
  const err = page.locator('#order-error');
  await until(page, () => document.getElementById('order-error').textContent.includes('left'));
  const msg = (await err.innerText()).trim();
  t.log('message:', msg);
  assert(msg.includes('Chocolate') && msg.includes('only 3 left') && msg.includes('asked for 5'),
         `the message names the product and what is left: ${msg}`);
  assert((await err.getAttribute('role')) === 'alert', 'the message is announced (role=alert)');
  assert(new URL(page.url()).pathname === '/', 'still on the storefront');
  // The menu was refreshed and the cart trimmed to what is left.
  await until(page, () => /3 left/.test(document.querySelector('#menu li[data-product="2"]').textContent));
  assert((await page.getByLabel('Chocolate in cart').innerText()) === '3', 'cart trimmed to the 3 left');
  await t.shot(page, 'out-of-stock.png');

  // How a 400 from the API reads (the page prevents most of them itself).
  const words = await page.evaluate(() => OMS.explain(
    {status: 400, body: {error: 'items[0].quantity: must be an integer from 1 to 1000'}}, ['Cheese']));
  assert(words === 'Quantity of Cheese: must be an integer from 1 to 1000.', `400 in words: ${words}`);
});

// The back office's menu and stock pages: a member of staff adds a dish, sees it on the
// storefront, restocks it, is refused a count below what is reserved (the 409 shown),
// renames and reprices it, marks it sold out and sees it gone from the storefront; both
// pages at a phone's width.
import {scenario, assert, until, noSideScroll, labelled} from './lib.mjs';

const ID = 'pea-soup';
const row = `li[data-product="${ID}"]`;

async function storefront(t, page) {
  await page.goto(t.gateway + '/');
  await page.getByRole('button', {name: 'Add one Cheese'}).waitFor();
}

await scenario('backoffice_stock', async t => {
  const page = await t.page();
  await t.signIn(page, '/staff/menu.html');
  await until(page, () => document.querySelectorAll('#dishes > li').length >= 6);

  // A refused dish: the server's 400 shows next to the form, naming the field.
  // (ids, not labels: each dish's hidden edit form has a Name and a Price too)
  await page.locator('#add-id').fill(ID);
  await page.locator('#add-name').fill('Pea soup');
  await page.locator('#add-price').fill('4.50');
  await page.locator('#add-currency').fill('XYZ');
  await page.getByRole('button', {name: 'Add dish'}).click();
  await until(page, () => /currency/i.test(document.getElementById('add-error').textContent));
  assert(await page.locator(row).count() === 0, 'a refused dish is not listed');
  assert(await page.locator('#add-error[role="alert"]').count() === 1, 'the error is an alert');

  await page.locator('#add-currency').fill('usd');
  await page.getByRole('button', {name: 'Add dish'}).click();
  await page.locator(row).waitFor();
  const listed = await page.locator(row).innerText();
  assert(listed.includes('Pea soup') && listed.includes('$4.50') && listed.includes('On sale'), `new dish: ${listed}`);
  await t.shot(page, 'backoffice-1-menu.png');

  // On the storefront, sold out until it has stock.
  const shopPage = await t.page();
  await storefront(t, shopPage);
  const fresh = await shopPage.locator(`#menu ${row}`).innerText();
  assert(fresh.includes('Pea soup') && fresh.includes('Sold out'), `storefront before restock: ${fresh}`);

  // Restock 12 on the stock page.
  await page.goto(t.gateway + '/staff/stock.html');
  await until(page, id => document.querySelector(`#levels tr[data-product="${id}"]`), ID);
  await page.getByLabel('Dish').selectOption(ID);
  await page.getByLabel('Units to add').fill('12');
  await page.getByLabel('Reason').fill('first batch');
  await page.getByRole('button', {name: 'Restock'}).click();
  await until(page, id => document.querySelector(`#levels tr[data-product="${id}"] [data-level="available"]`)
    .textContent === '12', ID);

  // Two reserved by a customer's unpaid order: a count of 1 is refused with the numbers.
  const order = await t.api('POST', '/api/customers/browser-bo/orders', {items: [{productID: ID, quantity: 2}]});
  assert(order.status === 201 && order.body.order.total === 900, `order at the new dish's price: ${JSON.stringify(order.body)}`);
  await page.reload();
  await until(page, id => document.querySelector(`#levels tr[data-product="${id}"] [data-level="reserved"]`)
    ?.textContent === '2', ID);
  await page.getByLabel('Dish').selectOption(ID);
  await page.getByLabel('Count (units on hand)').check();
  await page.getByLabel('Units on hand (counted)').fill('1');
  await page.getByLabel('Reason').fill('evening count');
  await page.getByRole('button', {name: 'Save count'}).click();
  await until(page, () => document.getElementById('adjust-error').textContent.includes('2 are reserved'));
  const refused = await page.locator('#adjust-error').innerText();
  assert(refused.includes('cannot set Pea soup to 1'), `409 shown: ${refused}`);
  const free = await page.locator(`#levels tr[data-product="${ID}"] [data-level="available"]`).innerText();
  assert(free === '10', `nothing changed by the refused count: ${free}`);
  await t.shot(page, 'backoffice-2-stock.png');

  await storefront(t, shopPage);
  const stocked = await shopPage.locator(`#menu ${row}`).innerText();
  assert(stocked.includes('10 left'), `storefront after restock: ${stocked}`);
  assert(await shopPage.getByRole('button', {name: 'Add one Pea soup'}).isEnabled(), 'orderable');

  // Rename and reprice; then sold out.
  await page.goto(t.gateway + '/staff/menu.html');
  await page.locator(row).waitFor();
  await page.getByRole('button', {name: 'Change Pea soup'}).click();
  await page.locator(`#name-${ID}`).fill('Green pea soup');
  await page.locator(`#price-${ID}`).fill('4.75');
  await page.locator(`${row} form`).getByRole('button', {name: 'Save'}).click();
  await until(page, sel => document.querySelector(sel)?.innerText.includes('Green pea soup'), row);
  assert((await page.locator(row).innerText()).includes('$4.75'), 'new price listed');
  await page.getByRole('button', {name: 'Mark sold out: Green pea soup'}).click();
  await until(page, sel => document.querySelector(sel)?.dataset.onSale === 'false', row);
  assert((await page.locator(row).innerText()).includes('Sold out'), 'badge says sold out');
  await t.shot(page, 'backoffice-3-sold-out.png');

  await storefront(t, shopPage);
  assert(await shopPage.locator(`#menu ${row}`).count() === 0, 'a sold-out dish is not on the storefront');
  const refusedOrder = await t.api('POST', '/api/customers/browser-bo/orders', {items: [{productID: ID, quantity: 1}]});
  assert(refusedOrder.status === 409 && /not on sale/.test(refusedOrder.body.error), `not orderable: ${JSON.stringify(refusedOrder.body)}`);
  await t.shot(shopPage, 'backoffice-4-storefront.png');

  // Both pages at 360 px: no sideways scrolling, every control named.
  const phone = await t.page({width: 360, height: 780});
  for (const [path, file, ready] of [
    ['/staff/menu.html', 'backoffice-5-menu-phone.png', '#dishes > li'],
    ['/staff/stock.html', 'backoffice-6-stock-phone.png', '#levels tbody tr']]) {
    await phone.goto(t.gateway + path);
    await until(phone, sel => document.querySelectorAll(sel).length >= 6, ready);
    if (path.endsWith('menu.html')) await phone.getByRole('button', {name: 'Change Cheese'}).click();
    await noSideScroll(phone, 360);
    await labelled(phone);
    await t.shot(phone, file);
  }
});

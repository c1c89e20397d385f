// Every page at a phone's width (360 px): no sideways scrolling, every control named,
// the keyboard focus visible, and big enough buttons to hit.
import {scenario, assert, until, noSideScroll, labelled} from './lib.mjs';

const W = 360;

async function check(t, page, file) {
  await noSideScroll(page, W);
  await labelled(page);
  const small = await page.evaluate(() => [...document.querySelectorAll('button, .button')]
    .filter(b => b.offsetParent !== null && b.getBoundingClientRect().height < 44).map(b => b.textContent));
  assert(small.length === 0, `${page.url()}: buttons under 44 px high: ${small}`);
  await t.shot(page, file);
}

await scenario('phone', async t => {
  const page = await t.page({width: W, height: 780});

  // Storefront: cart in use, the focus ring shows on keyboard focus.
  await page.goto(t.gateway + '/');
  await page.getByRole('button', {name: 'Add one Apple pie'}).waitFor();
  await page.getByLabel('Your customer id').fill('browser-phone');
  await page.getByRole('button', {name: 'Add one Apple pie'}).click();
  await page.getByRole('button', {name: 'Add one Cheese'}).click();
  await page.keyboard.press('Tab');
  const ring = await page.evaluate(() => {
    const s = getComputedStyle(document.activeElement);
    return {tag: document.activeElement.tagName, style: s.outlineStyle, width: s.outlineWidth};
  });
  assert(ring.style !== 'none' && ring.width !== '0px', `keyboard focus is visible: ${JSON.stringify(ring)}`);
  await check(t, page, 'phone-1-menu.png');

  // Status page, waiting for payment.
  await page.getByRole('button', {name: 'Place order'}).click();
  await page.waitForURL(/\/success\.html/);
  const pay = page.getByRole('link', {name: 'Go to payment'});
  await pay.waitFor();
  const live = await page.locator('[aria-live]').evaluateAll(es => es.map(e => e.textContent));
  assert(live.some(s => s.includes('Waiting for payment')), `status text is in a live region: ${live}`);
  await check(t, page, 'phone-2-status.png');

  // The local checkout (served by payments).
  await pay.click();
  await page.waitForURL(/\/checkout\//);
  await check(t, page, 'phone-3-checkout.png');
  await page.getByRole('button', {name: 'Pay', exact: true}).click();
  await page.waitForURL(/\/success\.html/);
  await until(page, () => document.getElementById('status').dataset.status === 'ready for pick-up', null, 120000);
  await check(t, page, 'phone-4-ready.png');

  await page.getByRole('link', {name: 'My orders'}).first().click();
  await page.waitForURL(/\/orders\.html\?customerID=browser-phone/);
  await until(page, () => document.querySelectorAll('#orders > li').length >= 1);
  await check(t, page, 'phone-5-orders.png');

  await t.signIn(page, '/kitchen');
  await until(page, () => document.querySelectorAll('.ticket').length >= 1);
  const tickets = await page.locator('.ticket').first().innerText();
  assert(!tickets.includes('browser-phone'), `the display never shows who the customer is: ${tickets}`);
  await check(t, page, 'phone-6-kitchen.png');
});

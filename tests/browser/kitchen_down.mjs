// The kitchen display while the kitchen service is down (the test stops it): the page
// says so instead of breaking, and keeps retrying.
import {scenario, assert, until, text} from './lib.mjs';

await scenario('kitchen_down', async t => {
  const page = await t.page();
  await t.signIn(page, '/kitchen');
  await until(page, () => document.getElementById('error').textContent.includes('not reachable'));
  assert((await page.getByRole('alert').innerText()).includes('Retrying'), 'says it retries');
  await t.shot(page, 'kitchen-down.png');
});

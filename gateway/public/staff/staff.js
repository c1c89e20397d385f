// The back office's frame (plain browser JavaScript, after /common.js): the staff
// navigation bar, the sign-in guard and a sign-out button. Each page under /staff/
// calls OMSStaff.start() first and renders once it resolves with the staff name.
'use strict';
const OMSStaff = (() => {
  const PAGES = [
    ['today', '/staff/today.html', 'Today'],
    ['orders', '/staff/orders.html', 'Orders'],
    ['menu', '/staff/menu.html', 'Menu'],
    ['stock', '/staff/stock.html', 'Stock'],
    ['audit', '/staff/audit.html', 'Audit'],
    ['kitchen', '/kitchen', 'Kitchen'],
  ];

  // Fills <nav id="staff-nav"> (or prepends one to <main>) with the staff pages.
  function nav() {
    let n = document.getElementById('staff-nav');
    if (!n) {
      n = OMS.el('nav', {id: 'staff-nav', class: 'staffnav', 'aria-label': 'Back office'});
      const main = document.querySelector('main');
      main.parentNode.insertBefore(n, main);
    }
    n.replaceChildren();
    for (const [key, href, label] of PAGES) {
      const a = OMS.el('a', {href, text: label, dataset: {staff: key}});
      if (location.pathname === href) a.setAttribute('aria-current', 'page');
      n.append(a);
    }
    const out = OMS.el('button', {type: 'button', class: 'secondary', id: 'staff-logout', text: 'Sign out'});
    out.addEventListener('click', async () => {
      await OMS.api('POST', '/staff/logout');
      location.assign('/staff/login.html');
    });
    n.append(out);
  }

  // Resolves with the signed-in name; without a session it goes to the sign-in page
  // (which comes back here) and never resolves.
  async function start() {
    nav();
    const res = await OMS.api('GET', '/api/staff/me');
    if (res.status === 401) {
      location.replace('/staff/login.html?next=' + encodeURIComponent(location.pathname + location.search));
      return new Promise(() => {});
    }
    if (!res.ok) throw new Error(OMS.explain(res));
    return res.body.name;
  }

  return {start, nav, PAGES};
})();

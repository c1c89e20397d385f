// Shared helpers for the OMS pages (plain browser JavaScript, no build step).
'use strict';
const OMS = (() => {
  const ID_RE = /^[A-Za-z0-9_.:-]{1,64}$/;
  const STORE_KEY = 'customerID';

  // The order statuses (README "Architecture") in words a customer understands.
  const STATUS_WORDS = {
    'pending': 'Order received',
    'waiting_payment': 'Waiting for payment',
    'paid': 'Paid',
    'cooking': 'Cooking',
    'ready for pick-up': 'Ready for pick-up',
    'collected': 'Collected',
    'cancelled': 'Cancelled',
    'payment_failed': 'Payment failed',
    'refunded': 'Refunded',
  };

  // A payment link as it may go into href: https, or plain http only to this page's
  // own host or to localhost (the offline checkout of `make run`); anything else
  // (javascript:, data:, a look-alike over http) is null and shown as no link.
  function safeLink(url) {
    let u;
    try { u = new URL(String(url || ''), location.href); } catch (e) { return null; }
    if (u.protocol === 'https:') return u.href;
    const local = u.hostname === location.hostname || u.hostname === 'localhost' || u.hostname === '127.0.0.1';
    return u.protocol === 'http:' && local ? u.href : null;
  }

  // el('p', {class: 'x', text: 'hi'}, child...) builds DOM without innerHTML.
  function el(tag, attrs, ...children) {
    const e = document.createElement(tag);
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k === 'text') e.textContent = v;
      else if (k === 'class') e.className = v;
      else if (k === 'dataset') Object.assign(e.dataset, v);
      else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
      else e.setAttribute(k, v === true ? '' : v);
    }
    for (const c of children) if (c !== null && c !== undefined) e.append(c);
    return e;
  }

  function money(cents, currency) {
    const n = Number(cents) || 0;
    const cur = (currency || 'usd').toUpperCase();
    try {
      return new Intl.NumberFormat('en', {style: 'currency', currency: cur}).format(n / 100);
    } catch (e) {
      return (n / 100).toFixed(2) + ' ' + cur;
    }
  }

  function validID(s) { return typeof s === 'string' && ID_RE.test(s); }

  function customerID() {
    try { return localStorage.getItem(STORE_KEY) || ''; } catch (e) { return ''; }
  }
  function rememberCustomer(id) {
    try { localStorage.setItem(STORE_KEY, id); } catch (e) { /* private mode: not remembered */ }
  }

  // The orders this browser placed (newest first, at most 50): "My orders" shows them
  // when the shop has no sign-in for customers (listing a customer needs staff then).
  const PLACED_KEY = 'placedOrders';
  function placedOrders(customer) {
    let all = [];
    try { all = JSON.parse(localStorage.getItem(PLACED_KEY) || '[]'); } catch (e) { all = []; }
    if (!Array.isArray(all)) all = [];
    return all.filter(o => o && validID(o.customerID) && validID(o.orderID) &&
                           (!customer || o.customerID === customer));
  }
  function rememberOrder(customer, orderID) {
    const all = placedOrders().filter(o => o.orderID !== orderID);
    all.unshift({customerID: customer, orderID});
    try { localStorage.setItem(PLACED_KEY, JSON.stringify(all.slice(0, 50))); } catch (e) { /* private mode */ }
  }

  // The short number a customer reads off the screen at the counter (end of the order id).
  // What the counter calls an order: its pickup code once paid, else the id's tail.
  function pickupNumber(orderID, code) {
    return code ? String(code) : String(orderID || '').slice(-6).toUpperCase();
  }

  // fetch + JSON; never throws: {ok, status, body, retryAfter, network}.
  async function api(method, path, body, headers) {
    const init = {method, headers: Object.assign({'Accept': 'application/json'}, headers || {})};
    if (body !== undefined) {
      init.headers['Content-Type'] = 'application/json';
      init.body = JSON.stringify(body);
    }
    let r;
    try {
      r = await fetch(path, init);
    } catch (e) {
      return {ok: false, status: 0, network: true, body: {error: 'no connection to the shop'}};
    }
    let parsed = null;
    try { parsed = await r.json(); } catch (e) { parsed = null; }
    const ra = parseInt(r.headers.get('Retry-After') || '', 10);
    return {ok: r.ok, status: r.status, body: parsed || {}, retryAfter: isNaN(ra) ? 0 : ra};
  }

  const FIELD_WORDS = {
    customerID: 'Customer id', orderID: 'Order id', items: 'Items', productID: 'Product',
    quantity: 'Quantity', pageSize: 'Page size', pageToken: 'Page', 'Idempotency-Key': 'Request key',
  };

  // An API error in words. 409 names the product and how many are left; 400 the field.
  function explain(res, products) {
    const msg = (res.body && res.body.error) || '';
    if (res.network) return 'Cannot reach the shop. Check your connection and try again.';
    if (res.status === 409) {
      const m = /not enough stock for product ([^ ]+) \((.*)\): requested (\d+), (\d+) left/.exec(msg);
      if (m) {
        const left = Number(m[4]);
        const name = m[2] || m[1];
        return `Sorry, not enough ${name} in stock: you asked for ${m[3]}, ` +
          (left === 0 ? `and it is sold out.` : `only ${left} left.`);
      }
      return 'Sorry: ' + (msg || 'that is no longer possible.');
    }
    if (res.status === 400) {
      const m = /^([A-Za-z-]+)(\[(\d+)\])?(\.([A-Za-z]+))?: (.*)$/.exec(msg);
      if (m) {
        let field = FIELD_WORDS[m[5] || m[1]] || (m[5] || m[1]);
        if (m[3] !== undefined && products) {
          const p = products[Number(m[3])];
          if (p) field += ` of ${p}`;
        }
        return `${field}: ${m[6]}.`;
      }
      return 'Please check your input: ' + msg;
    }
    if (res.status === 404) return msg ? msg.charAt(0).toUpperCase() + msg.slice(1) + '.' : 'Not found.';
    if (res.status === 503 && /^service overloaded/.test(msg)) {
      return 'The shop is very busy right now. Please try again in a few seconds.';
    }
    if (res.status === 503) return 'The shop is briefly unavailable. Please try again in a few seconds.';
    if (res.status === 413) return 'That order is too large.';
    return msg || `Something went wrong (HTTP ${res.status}).`;
  }

  // Marks the current page's link in the top bar and fills in the customer's links.
  function initNav() {
    const cid = customerID();
    for (const a of document.querySelectorAll('.topbar a[data-nav]')) {
      if (a.dataset.nav === 'orders' && cid) a.href = '/orders.html?customerID=' + encodeURIComponent(cid);
      const here = location.pathname === '/' ? '/index.html' : location.pathname;
      if (a.dataset.page === here) a.setAttribute('aria-current', 'page');
    }
  }

  function timeAgo(ms) {
    const s = Math.max(0, Math.round(ms / 1000));
    if (s < 60) return `${s} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m} min ${String(s % 60).padStart(2, '0')} s`;
    return `${Math.floor(m / 60)} h ${String(m % 60).padStart(2, '0')} min`;
  }

  function when(iso) {
    const d = new Date(iso);
    if (isNaN(d)) return '';
    return d.toLocaleString(undefined, {dateStyle: 'medium', timeStyle: 'short'});
  }

  function newKey() {
    if (window.crypto && crypto.randomUUID) return crypto.randomUUID();
    return 'k' + Date.now().toString(36) + Math.random().toString(36).slice(2, 12);
  }

  return {el, money, validID, customerID, rememberCustomer, pickupNumber, api, explain, initNav,
          timeAgo, when, newKey, safeLink, placedOrders, rememberOrder, STATUS_WORDS};
})();

// Prints a Stripe-Signature header for the payload read from stdin, made by Stripe's
// official library (stripe.webhooks.generateTestHeaderString), so the integration
// tests check our verifier against Stripe's own signer rather than against ours.
// Usage: STRIPE_WEBHOOK_SECRET=whsec_... node stripe_sign.js < payload.json
'use strict';
const Stripe = require('stripe');

const secret = process.env.STRIPE_WEBHOOK_SECRET;
if (!secret) {
  process.stderr.write('STRIPE_WEBHOOK_SECRET is not set\n');
  process.exit(2);
}
const chunks = [];
process.stdin.on('data', (c) => chunks.push(c));
process.stdin.on('end', () => {
  const payload = Buffer.concat(chunks).toString('utf8');
  // The key is never used for a request: the webhooks helpers work offline.
  const stripe = new Stripe('sk_test_unused');
  process.stdout.write(stripe.webhooks.generateTestHeaderString({ payload, secret }));
});

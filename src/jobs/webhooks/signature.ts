// How hook deliveries are signed: the Standard Webhooks scheme (https://www.standardwebhooks.com/), so receivers can
// verify them with that project's libraries or a few lines of their own. Each POST carries
//   webhook-id:        the event's id (the same on every retry: deduplicate on it)
//   webhook-timestamp: when this attempt was signed, in Unix seconds (receivers reject old ones: replay protection)
//   webhook-signature: "v1," + base64(HMAC-SHA256(key, "<webhook-id>.<webhook-timestamp>.<body>"))
// The secret is "whsec_" + base64 of the key (WORKCELL_CALLBACK_SECRET; `openssl rand -base64 32` makes a key).
// The secret never leaves the server and is never logged.
import { createHmac } from 'node:crypto';

export const webhookSecretPattern = /^whsec_[A-Za-z0-9+/]{22,}={0,2}$/;

/** The HMAC key of a "whsec_<base64>" secret. */
export function webhookKey(secret: string): Buffer {
  if (!webhookSecretPattern.test(secret)) throw new Error('a webhook secret is "whsec_" followed by base64 of at least 16 bytes');
  return Buffer.from(secret.slice('whsec_'.length), 'base64');
}

/** The three Standard Webhooks headers for one attempt. */
export function signatureHeaders(key: Buffer, eventId: string, timestampS: number, body: string): Record<string, string> {
  const signature = createHmac('sha256', key).update(`${eventId}.${timestampS}.${body}`).digest('base64');
  return { 'webhook-id': eventId, 'webhook-timestamp': String(timestampS), 'webhook-signature': `v1,${signature}` };
}

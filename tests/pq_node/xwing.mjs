// An independent X-Wing (draft-connolly-cfrg-xwing-kem-10) for tests/keys/test_pq_node.py:
// ML-KEM-768 from @noble/post-quantum, X25519 from @noble/curves, SHAKE-256 and SHA3-256
// from @noble/hashes; the combiner is written here, from the draft. Reads a JSON request
// on stdin, prints the values it computed as JSON; the Python side compares.
import { ml_kem768 } from '@noble/post-quantum/ml-kem.js';
import { x25519 } from '@noble/curves/ed25519.js';
import { sha3_256, shake256 } from '@noble/hashes/sha3.js';
import { randomBytes } from 'node:crypto';

const LABEL = Buffer.from('5c2e2f2f5e5c', 'hex'); // "\./" "/^\"
const hex = (b) => Buffer.from(b).toString('hex');
const bin = (h) => new Uint8Array(Buffer.from(h, 'hex'));
const cat = (...parts) => new Uint8Array(Buffer.concat(parts.map((p) => Buffer.from(p))));

function expand(seed) {
  const e = shake256(seed, { dkLen: 96 });
  const { publicKey: pkM, secretKey: skM } = ml_kem768.keygen(e.subarray(0, 64));
  const skX = e.subarray(64, 96);
  return { skM, skX, pkM, pkX: x25519.getPublicKey(skX) };
}

const combiner = (ssM, ssX, ctX, pkX) => sha3_256(cat(ssM, ssX, ctX, pkX, LABEL));

function encapsulate(pk, eseed) {
  const pkM = pk.subarray(0, 1184), pkX = pk.subarray(1184, 1216);
  const ekX = eseed.subarray(32, 64);
  const ctX = x25519.getPublicKey(ekX);
  const ssX = x25519.getSharedSecret(ekX, pkX);
  const { cipherText: ctM, sharedSecret: ssM } = ml_kem768.encapsulate(pkM, eseed.subarray(0, 32));
  return { ss: combiner(ssM, ssX, ctX, pkX), ct: cat(ctM, ctX) };
}

function decapsulate(ct, seed) {
  const { skM, skX, pkX } = expand(seed);
  const ctM = ct.subarray(0, 1088), ctX = ct.subarray(1088, 1120);
  return combiner(ml_kem768.decapsulate(ctM, skM), x25519.getSharedSecret(skX, ctX), ctX, pkX);
}

const chunks = [];
for await (const c of process.stdin) chunks.push(c);
const req = JSON.parse(Buffer.concat(chunks).toString());
const out = {
  // The draft's vectors: keys from the seed, encapsulation with the draft's fixed eseed.
  draft: req.draft.map((v) => {
    const { pkM, pkX } = expand(bin(v.seed));
    const { ss, ct } = encapsulate(cat(pkM, pkX), bin(v.eseed));
    return { pk: hex(cat(pkM, pkX)), ct: hex(ct), ss: hex(ss), dec: hex(decapsulate(bin(v.ct), bin(v.seed))) };
  }),
  // Our keys and ciphertexts: derive the public key from our seed, decapsulate ours.
  decapsulated: req.ours.map((o) => ({
    pk: hex(cat(expand(bin(o.seed)).pkM, expand(bin(o.seed)).pkX)),
    ss: hex(decapsulate(bin(o.ct), bin(o.seed))),
  })),
  // Encapsulate to our public keys with fresh randomness; Python decapsulates.
  encapsulated: req.encapsulate_to.map((pk) => {
    const { ss, ct } = encapsulate(bin(pk), new Uint8Array(randomBytes(64)));
    return { ct: hex(ct), ss: hex(ss) };
  }),
};
process.stdout.write(JSON.stringify(out));

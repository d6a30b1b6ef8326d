// Reference outputs of the nsfwjs models, computed by the original TF.js runtime.
//
// Loads MobileNetV2Mid and InceptionV3 through nsfwjs's own bundled model loaders
// (nsfwjs.load("MobileNetV2Mid") etc., i.e. the dist/models/*/*.min.js bundles) on the
// pure-JS "cpu" backend of @tensorflow/tfjs, feeds them small synthetic inputs that
// Python can rebuild bit for bit from a recipe, and writes the recipes plus the
// output probabilities to tests/fixtures/nsfwjs_reference.json.
//
// Usage (from models/convert, after `npm ci`):
//   node tfjs_reference.mjs [--out ../../tests/fixtures/nsfwjs_reference.json]
//
// Input construction (mirrored in tests/unit/test_nsfwjs_models.py):
//   1. a recipe gives an RGB uint8 image `pixel[y][x][c]` of side S (the model's size);
//   2. the model input is float32(pixel / 255), shape [1, S, S, 3] (NHWC), which is
//      exactly what nsfwjs's NSFWJS.infer() feeds the model for an S x S image
//      (img.toFloat().div(255), no resize when the image is already S x S).
//   The script checks that equivalence by also running infer() on the uint8 image.
import { createHash } from "node:crypto";
import { mkdirSync, readFileSync, writeFileSync } from "node:fs";
import { dirname, resolve } from "node:path";
import { fileURLToPath } from "node:url";

import * as tf from "@tensorflow/tfjs";
import * as nsfwjs from "nsfwjs";

const here = dirname(fileURLToPath(import.meta.url));
const args = process.argv.slice(2);
const outIdx = args.indexOf("--out");
const outPath = outIdx >= 0 ? resolve(args[outIdx + 1]) : resolve(here, "../../tests/fixtures/nsfwjs_reference.json");

const pkgVersion = (name) =>
  JSON.parse(readFileSync(resolve(here, "node_modules", name, "package.json"), "utf8")).version;

// Linear congruential generator (Numerical Recipes constants), modulus 2^32.
// Each output byte is the top 8 bits of the new state.
const LCG = { a: 1664525, c: 1013904223 };

function makePixels(recipe, S) {
  const px = new Uint8Array(S * S * 3);
  let state = recipe.kind === "lcg" ? recipe.seed >>> 0 : 0;
  for (let y = 0; y < S; y++) {
    for (let x = 0; x < S; x++) {
      for (let c = 0; c < 3; c++) {
        let v;
        switch (recipe.kind) {
          case "constant":
            v = recipe.rgb[c];
            break;
          case "hgradient": // grey ramp, black at x = 0, white at x = S - 1
            v = Math.floor((x * 255) / (S - 1));
            break;
          case "vgradient": { // colour ramp: red rises, green falls with y; blue fixed
            const r = Math.floor((y * 255) / (S - 1));
            v = [r, 255 - r, recipe.blue][c];
            break;
          }
          case "checkerboard": {
            const odd = (Math.floor(x / recipe.cell) + Math.floor(y / recipe.cell)) % 2;
            v = odd ? recipe.hi : recipe.lo;
            break;
          }
          case "lcg": // bytes in row-major (y, x, c) order
            state = (Math.imul(LCG.a, state) + LCG.c) >>> 0;
            v = state >>> 24;
            break;
          default:
            throw new Error(`unknown recipe kind ${recipe.kind}`);
        }
        px[(y * S + x) * 3 + c] = v;
      }
    }
  }
  return px;
}

const RECIPES = [
  { name: "grey", recipe: { kind: "constant", rgb: [128, 128, 128] } },
  { name: "hgradient", recipe: { kind: "hgradient" } },
  { name: "vgradient", recipe: { kind: "vgradient", blue: 64 } },
  { name: "checkerboard", recipe: { kind: "checkerboard", cell: 16, lo: 32, hi: 224 } },
  { name: "lcg_noise", recipe: { kind: "lcg", seed: 12345 } },
  { name: "skin", recipe: { kind: "constant", rgb: [224, 172, 150] } },
];

const MODELS = [
  { key: "nsfwjs_mobilenet_v2_mid", nsfwjsName: "MobileNetV2Mid", size: 224 },
  { key: "nsfwjs_inception_v3", nsfwjsName: "InceptionV3", size: 299 },
];

const LABELS = ["drawing", "hentai", "neutral", "porn", "sexy"]; // nsfw_classes.js, index order

async function main() {
  await tf.setBackend("cpu");
  await tf.ready();
  const result = {
    generator: "models/convert/tfjs_reference.mjs",
    nsfwjs_version: pkgVersion("nsfwjs"),
    tfjs_version: pkgVersion("@tensorflow/tfjs"),
    tfjs_backend: tf.getBackend(),
    node_version: process.version,
    input_rule: "input = float32(pixel / 255) (division in float64, then rounded to float32); pixel = RGB uint8 image [y][x][c] from the recipe; tensor shape [1, S, S, 3] NHWC",
    lcg: { a: LCG.a, c: LCG.c, modulus: 4294967296, byte: "state >>> 24 after each step", order: "row-major y, x, c" },
    input_sha256: "SHA-256 of the float32 little-endian bytes of the [1, S, S, 3] input",
    labels: LABELS,
    models: {},
  };
  for (const m of MODELS) {
    const t0 = Date.now();
    const model = await nsfwjs.load(m.nsfwjsName); // nsfwjs's bundled loader; size from its options
    if (model.options.size !== m.size) throw new Error(`${m.nsfwjsName}: nsfwjs size ${model.options.size} != ${m.size}`);
    const cases = [];
    for (const { name, recipe } of RECIPES) {
      const S = m.size;
      const px = makePixels(recipe, S);
      const input = new Float32Array(px.length);
      for (let i = 0; i < px.length; i++) input[i] = px[i] / 255; // float64 divide, stored as float32
      const x = tf.tensor4d(input, [1, S, S, 3], "float32");
      const y = model.model.predict(x);
      const probs = Array.from(await y.data());
      // Same image through nsfwjs's public path (toFloat, div 255, no resize at size S).
      const img = tf.tensor3d(px, [S, S, 3], "int32");
      const y2 = model.infer(img);
      const probs2 = Array.from(await y2.data());
      const inferDiff = Math.max(...probs.map((p, i) => Math.abs(p - probs2[i])));
      if (inferDiff !== 0) throw new Error(`${m.key}/${name}: infer() differs from predict() by ${inferDiff}`);
      tf.dispose([x, y, img, y2]);
      const sha = createHash("sha256").update(Buffer.from(input.buffer)).digest("hex");
      cases.push({ name, recipe, input_sha256: sha, probabilities: probs });
      console.log(`${m.key} ${name.padEnd(12)} ${probs.map((p) => p.toFixed(6)).join(" ")}`);
    }
    model.dispose();
    result.models[m.key] = { nsfwjs_name: m.nsfwjsName, size: m.size, cases };
    console.log(`${m.key}: ${((Date.now() - t0) / 1000).toFixed(1)} s`);
  }
  mkdirSync(dirname(outPath), { recursive: true });
  writeFileSync(outPath, JSON.stringify(result, null, 2) + "\n");
  console.log(`wrote ${outPath}`);
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});

#!/usr/bin/env node
// Validates Kubernetes objects against the Kubernetes API schema.
//
//   node validate-k8s.mjs FILE...     (FILE may be "-" for stdin; each may hold many documents)
//
// Each document is checked by the model class for its apiVersion/kind from kubernetes-models (the
// OpenAPI schema of the Kubernetes API, compiled into validators) or, for cert-manager.io objects,
// from @kubernetes-models/cert-manager, and for monitoring.coreos.com objects (PodMonitor) from
// @kubernetes-models/prometheus-operator. That catches wrong types, bad enum values and missing
// required fields. The OpenAPI schema does not forbid unknown fields, but the API server rejects
// them (kubectl's default strict field validation), and a misspelt key such as `restartpolicy`
// would silently turn the native sidecar into an init container that never ends. So every object
// is also checked for fields the schema does not declare: the validator is run on a proxy that
// records which keys the schema looked up, and any key of a fixed-shape object that it never
// looked up is reported. Map-shaped objects (labels, ConfigMap data) are enumerated by the
// validator as a whole and so accept any key.
//
// Prints one line per problem and exits 1 if there was any, 0 otherwise.

import { readFileSync } from "node:fs";
import { parseAllDocuments } from "yaml";
import * as kubernetesModels from "kubernetes-models";
import * as certManagerModels from "@kubernetes-models/cert-manager";
import * as prometheusOperatorModels from "@kubernetes-models/prometheus-operator";

function collectModels(namespace, models, depth = 0) {
  for (const value of Object.values(namespace)) {
    if (typeof value === "function") {
      if (typeof value.apiVersion === "string" && typeof value.kind === "string") {
        models.set(`${value.apiVersion}/${value.kind}`, value);
      }
    } else if (value && typeof value === "object" && depth < 3) {
      collectModels(value, models, depth + 1);
    }
  }
  return models;
}

const models = collectModels(
  prometheusOperatorModels,
  collectModels(certManagerModels, collectModels(kubernetesModels, new Map())),
);

// Wraps `value` so that every key read through it is recorded in `nodes`.
function track(value, path, nodes) {
  if (value === null || typeof value !== "object") return value;
  const node = { path, value, used: new Set(), enumerated: false };
  nodes.push(node);
  const children = new Map();
  return new Proxy(value, {
    get(target, key, receiver) {
      const child = Reflect.get(target, key, receiver);
      if (typeof key !== "string") return child;
      node.used.add(key);
      if (child === null || typeof child !== "object") return child;
      if (!children.has(key)) {
        const childPath = Array.isArray(target) ? `${path}[${key}]` : `${path}.${key}`;
        children.set(key, track(child, childPath, nodes));
      }
      return children.get(key);
    },
    has(target, key) {
      if (typeof key === "string") node.used.add(key);
      return Reflect.has(target, key);
    },
    ownKeys(target) {
      node.enumerated = true;
      return Reflect.ownKeys(target);
    },
  });
}

function unknownFields(nodes) {
  const problems = [];
  for (const node of nodes) {
    if (Array.isArray(node.value) || node.enumerated) continue;
    for (const key of Object.keys(node.value)) {
      if (!node.used.has(key)) problems.push(`unknown field "${node.path}.${key}"`);
    }
  }
  return problems;
}

// Returns the problems of one parsed object (an empty list when it is valid).
export function validateObject(object) {
  if (object === null || typeof object !== "object" || Array.isArray(object)) {
    return ["not an object"];
  }
  const model = models.get(`${object.apiVersion}/${object.kind}`);
  if (!model) return [`no schema for apiVersion "${object.apiVersion}", kind "${object.kind}"`];
  const problems = [];
  try {
    new model(object).validate();
  } catch (error) {
    problems.push(`schema: ${error.message}`);
  }
  const nodes = [];
  try {
    model.prototype.validate.call(track(object, "", nodes));
  } catch {
    // Already reported above; the walk still recorded which fields the schema knows.
  }
  return problems.concat(unknownFields(nodes));
}

function describe(object, index) {
  const kind = object && object.kind ? object.kind : "?";
  const name = object && object.metadata && object.metadata.name ? object.metadata.name : "?";
  return `document ${index + 1} (${kind}/${name})`;
}

function main(files) {
  if (files.length === 0) {
    console.error("usage: validate-k8s.mjs FILE...  (- for stdin)");
    return 2;
  }
  let failures = 0;
  let count = 0;
  for (const file of files) {
    const text = readFileSync(file === "-" ? 0 : file, "utf8");
    const documents = parseAllDocuments(text);
    documents.forEach((document, index) => {
      if (document.errors.length > 0) {
        failures++;
        for (const e of document.errors) console.log(`${file}: document ${index + 1}: ${e.message}`);
        return;
      }
      const object = document.toJS();
      if (object === null) return;  // an empty document, e.g. after a trailing ---
      count++;
      for (const problem of validateObject(object)) {
        failures++;
        console.log(`${file}: ${describe(object, index)}: ${problem}`);
      }
    });
  }
  if (count === 0) {
    console.log("no Kubernetes objects found");
    return 1;
  }
  if (failures === 0) console.log(`${count} object(s) valid`);
  return failures === 0 ? 0 : 1;
}

process.exitCode = main(process.argv.slice(2));

// The direct path of a POST or PUT body: a normalised resource (entra-dialect.ts)
// whose every attribute is a string or boolean, or a complex value (singular
// or multi-valued) of string and boolean sub-attributes, each of the type the
// schema says, is coerced here into the plain object scimmy's
// SchemaDefinition.coerce would give. That is every user and class Entra's
// default attribute mappings send, and it spares scimmy's proxies and
// per-value getters, a tenth of a millisecond per create. Anything else (an
// unknown attribute or sub-attribute, a reference, binary, number or date, a
// canonical value, a missing required value, a value of the wrong type)
// answers undefined, and the caller hands the body to scimmy, which accepts,
// drops or refuses it. test/simple-resource.test.ts checks over generated
// bodies that both give the same document.
import SCIMMY from 'scimmy';

type Json = Record<string, unknown>;
type Attribute = SCIMMY.Types.Attribute;
type SchemaDefinition = SCIMMY.Types.SchemaDefinition;

// Not entra-dialect.ts's: that module imports schemas.ts, which imports this one.
const isObject = (v: unknown): v is Json => typeof v === 'object' && v !== null && !Array.isArray(v);

// scimmy types a definition's attributes as Attribute[]; extensions sit there too.
function members(definition: SchemaDefinition): (Attribute | SchemaDefinition)[] {
  return definition.attributes;
}

/** 'string' or 'boolean' for a value this path takes as it is; undefined for the rest. */
type Scalar = 'string' | 'boolean';

/** What this path needs to know of an attribute, read once from scimmy's (proxied) configuration. */
interface Shape {
  name: string;
  /** A scalar attribute's type, or the sub-attributes of a complex one; undefined: not for this path. */
  scalar?: Scalar;
  subAttributes?: Map<string, Scalar | undefined>;
  requiredSubAttributes?: string[];
  multiValued: boolean;
  /** Required on the way in: its absence is scimmy's to report. */
  required: boolean;
}

interface DefinitionShape {
  id: string;
  attributes: Shape[];
  names: Set<string>;
  extensions: DefinitionShape[];
  required: boolean;
}

/** A string or boolean attribute without canonical values, taken as it is. */
function scalarOf(attribute: Attribute): Scalar | undefined {
  const { multiValued, canonicalValues, direction, returned } = attribute.config;
  // scimmy leaves a sub-attribute that is never returned out of the JSON it gives.
  if (multiValued || Array.isArray(canonicalValues) || direction !== 'both' || returned === false || returned === 'never') return undefined;
  return attribute.type === 'string' || attribute.type === 'boolean' ? attribute.type : undefined;
}

function shapeOf(attribute: Attribute): Shape {
  const { multiValued, required, direction, canonicalValues } = attribute.config;
  const shape: Shape = { name: attribute.name, multiValued: multiValued === true, required: required === true && direction !== 'out' };
  if (attribute.type !== 'complex') {
    const scalar = multiValued ? undefined : scalarOf(attribute);
    if (scalar) shape.scalar = scalar;
  } else if (direction === 'both' && !Array.isArray(canonicalValues)) {
    const subAttributes = attribute.subAttributes ?? [];
    shape.subAttributes = new Map(subAttributes.map((s) => [s.name, scalarOf(s)]));
    shape.requiredSubAttributes = subAttributes.filter((s) => s.config.required).map((s) => s.name);
  }
  return shape;
}

const shapes = new WeakMap<SchemaDefinition, DefinitionShape>();

function definitionShape(definition: SchemaDefinition): DefinitionShape {
  let shape = shapes.get(definition);
  if (shape === undefined) {
    const attributes = members(definition)
      .filter((a): a is Attribute => a instanceof SCIMMY.Types.Attribute)
      .filter((a) => a.name !== 'schemas' && a.name !== 'meta')
      .map(shapeOf);
    shape = {
      id: definition.id,
      attributes,
      names: new Set(attributes.map((a) => a.name)),
      extensions: members(definition)
        .filter((a): a is SchemaDefinition => a instanceof SCIMMY.Types.SchemaDefinition)
        .map(definitionShape),
      required: (definition as { required?: boolean }).required === true,
    };
    shapes.set(definition, shape);
  }
  return shape;
}

function scalarValue(scalar: Scalar | undefined, value: unknown): unknown {
  return scalar !== undefined && typeof value === scalar ? value : undefined;
}

/** One complex value: known scalar sub-attributes only, none of the required ones missing. */
function complexValue(shape: Shape, value: unknown): Json | undefined {
  if (!isObject(value) || !shape.subAttributes) return undefined;
  const out: Json = {};
  for (const key of Object.keys(value)) {
    const coerced = scalarValue(shape.subAttributes.get(key), value[key]);
    if (coerced === undefined) return undefined;
    out[key] = coerced;
  }
  for (const name of shape.requiredSubAttributes ?? []) if (!(name in out)) return undefined;
  return out;
}

function attributeValue(shape: Shape, value: unknown): unknown {
  if (!shape.subAttributes) return scalarValue(shape.scalar, value);
  if (!shape.multiValued) return complexValue(shape, value);
  if (!Array.isArray(value)) return undefined;
  const out: Json[] = [];
  for (const item of value) {
    const coerced = complexValue(shape, item);
    if (coerced === undefined) return undefined;
    out.push(coerced);
  }
  return out;
}

/** The attributes of one schema (core or extension) in the body, in the schema's order, into out; false when one is not for this path. */
function attributesOf(definition: DefinitionShape, body: Json, out: Json): boolean {
  for (const shape of definition.attributes) {
    const value = body[shape.name];
    if (value === undefined) {
      if (shape.required) return false;
      continue;
    }
    const coerced = attributeValue(shape, value);
    if (coerced === undefined) return false;
    out[shape.name] = coerced;
  }
  return true;
}

/**
 * The body as scimmy's coerce (direction "in") gives it, without meta; or
 * undefined when the body is not for this path. `body` is not modified.
 */
export function coerceSimpleResource(schema: SchemaDefinition, body: Json): Json | undefined {
  const definition = definitionShape(schema);
  const { extensions } = definition;
  for (const key of Object.keys(body)) {
    if (key !== 'schemas' && !definition.names.has(key) && !extensions.some((e) => e.id === key)) return undefined;
  }
  // scimmy names the core schema, each extension the body has, then the body's own list.
  const named = body.schemas;
  if (named !== undefined && !(Array.isArray(named) && named.every((s) => s === definition.id || extensions.some((e) => e.id === s)))) return undefined;
  const schemas = [...new Set([definition.id, ...extensions.filter((e) => body[e.id] !== undefined).map((e) => e.id), ...((named as string[] | undefined) ?? [])])];
  const out: Json = { schemas };
  if (!attributesOf(definition, body, out)) return undefined;
  for (const extension of extensions) {
    const value = body[extension.id];
    if (value === undefined) {
      if (extension.required) return undefined;
      continue;
    }
    if (!isObject(value) || Object.keys(value).some((key) => !extension.names.has(key))) return undefined;
    const coerced: Json = {};
    if (!attributesOf(extension, value, coerced)) return undefined;
    if (Object.keys(coerced).length > 0) out[extension.id] = coerced;
  }
  return out;
}

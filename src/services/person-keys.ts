// What makes two accounts look like one person, in the forms the first-sync
// preview and the merge's cautions compare: names and the local part of an
// address, each folded the same way.

/** Lower-case, single-spaced, composed: the form in which two names are the same. */
export function nameKey(value: string | null | undefined): string | undefined {
  const key = value?.normalize('NFC').trim().replace(/\s+/g, ' ').toLowerCase();
  return key === undefined || key === '' ? undefined : key;
}

/** A person's names as keys: given and family name together, and the display name. */
export function personNames(given: string | null, family: string | null, display: string | null): string[] {
  const full = given !== null && family !== null ? nameKey(`${given} ${family}`) : undefined;
  return [...new Set([full, nameKey(display)].filter((k): k is string => k !== undefined))];
}

/** The part of an address before its last @ (the address itself when it has none). */
export function localPart(address: string): string {
  const at = address.lastIndexOf('@');
  return at > 0 ? address.slice(0, at) : address;
}

// The school rules as named modules, without a database: adoption (rules 2
// and 8), the admin guard (rule 3), roles (rule 4), deprovisioning (rules 6
// and 7), class members (rule 5), the audit events, and the planners that
// combine them into write plans.
import t from 'tap';
import type { AccountResource, AccountRow, ClassRow } from '../src/db/columns.js';
import type { AccountValues } from '../src/db/write-plan.js';
import { ScimError } from '../src/errors.js';
import { planClassChange, planClassCreate } from '../src/scim/class-writes.js';
import { resolveRole } from '../src/scim/rules/roles.js';
import { AdminCollision, addressesTaken, adminCollisionError, refuseAdminCollision } from '../src/scim/rules/admin-guard.js';
import { addresses, adoptableAddresses, adoptionDetails, chooseAdoption, inVerifiedDomain } from '../src/scim/rules/adoption.js';
import { adminCollisionEvent, classChanged, userChanged, userCreated } from '../src/scim/rules/audit-events.js';
import { namedMembers, netMemberChange, notUsersError } from '../src/scim/rules/class-members.js';
import { activeAfterReplace, changeAction, isActive } from '../src/scim/rules/deprovisioning.js';
import { planUserChange, planUserCreate, planUserDelete } from '../src/scim/user-writes.js';
import { PORTAL } from './helpers/scim.js';

const actor = { tenantId: 't-1', credentialId: 'c-1', requestId: 'r-1' };

/** What `run` throws (undefined when it returns). */
function thrown(run: () => unknown): unknown {
  try {
    run();
  } catch (error) {
    return error;
  }
  return undefined;
}

const values = (over: Partial<AccountValues> = {}): AccountValues => ({
  user_name: 'Pupil1@School.example',
  external_id: 'entra-1',
  email: 'pupil1@school.example',
  given_name: 'Pupil',
  family_name: null,
  display_name: null,
  school_id: null,
  grade: null,
  active: true,
  role: 'student',
  scim: {},
  ...over,
});

const account = (over: Partial<AccountRow> = {}): AccountRow => ({
  tenant_id: 't-1',
  id: 'a-1',
  managed_by: 'manual',
  role: 'teacher',
  user_name: 'lena.teacher',
  external_id: null,
  email: 'pupil1@school.example',
  given_name: null,
  family_name: null,
  display_name: null,
  school_id: null,
  grade: null,
  active: true,
  scim: {},
  version: 4,
  created_at: new Date(0),
  updated_at: new Date(0),
  deleted_at: null,
  created_by_sync: null,
  role_override: null,
  grade_override: null,
  several_emails: false,
  ...over,
});

t.test('adoption: addresses, verified domains, rule 8 before rule 2, and what the log keeps', async (t) => {
  t.same(addresses(values()), ['Pupil1@School.example'], 'userName and e-mail are one address in any case, as sent: the database folds it');
  t.same(addresses(values({ email: 'Other@Elsewhere.example' })), ['Pupil1@School.example', 'Other@Elsewhere.example']);
  t.same(addresses(values({ email: null })), ['Pupil1@School.example']);
  t.same(addresses(values({ user_name: 'ÅSA@school.example', email: 'åsa@school.example' })), ['ÅSA@school.example', 'åsa@school.example'], 'two addresses where lower() folds ASCII letters only');
  t.ok(inVerifiedDomain('a@school.example', ['school.example']));
  t.notOk(inVerifiedDomain('a@sub.school.example', ['school.example']), 'a subdomain is another domain');
  t.ok(inVerifiedDomain('a@School.EXAMPLE', ['school.example']), 'in any case of ASCII letters');
  t.notOk(inVerifiedDomain('a@\u212Aommun.example', ['kommun.example']), 'the Kelvin sign is no K');
  t.notOk(inVerifiedDomain('a@\u0130school.example', ['ischool.example']), 'a dotted capital I is no i');
  t.notOk(inVerifiedDomain('school.example', ['school.example']), 'no local part, no address');
  t.same(adoptableAddresses(['a@school.example', 'b@gmail.example'], ['school.example']), [true, false]);

  const byExternalId = account({ id: 'x' });
  const byAddress = account({ id: 'y' });
  t.match(chooseAdoption(byExternalId, byAddress), { candidate: { id: 'x' }, matchedBy: 'externalId' });
  t.match(chooseAdoption(undefined, byAddress), { candidate: { id: 'y' }, matchedBy: 'address' });
  t.equal(chooseAdoption(undefined, undefined), undefined);
  t.same(adoptionDetails({ candidate: byAddress, matchedBy: 'address' }, values()), {
    matchedBy: 'address',
    portalAccount: { id: 'y', userName: 'lena.teacher' },
    entraObject: { externalId: 'entra-1', userName: 'Pupil1@School.example' },
  });
});

t.test('the admin guard refuses with 409 uniqueness, already audited', async (t) => {
  t.doesNotThrow(() => refuseAdminCollision(undefined, { user_name: 'x', email: null }));
  const admin = { id: 'admin-1', user_name: 'head', email: 'it.admin@school.example' };
  const refusal = (values: { user_name: string; email: string | null }) => {
    try {
      refuseAdminCollision({ ...admin, user_name: values.user_name === 'pupil1@school.example' ? 'PUPIL1@school.example' : admin.user_name }, values);
    } catch (error) {
      return error;
    }
    return undefined;
  };
  t.match(refusal({ user_name: 'pupil1@school.example', email: 'pupil1@school.example' }), { adminId: 'admin-1', ref: 'pupil1@school.example', address: 'pupil1@school.example' }, 'the userName the admin holds, in any case');
  const byEmail = refusal({ user_name: 'u9@school.example', email: 'IT.Admin@school.example' });
  t.ok(byEmail instanceof AdminCollision);
  t.match(byEmail, { ref: 'u9@school.example', address: 'IT.Admin@school.example' }, 'the e-mail the admin holds, as the user has it; the conflict still names the user');
  const addressOf = (held: { user_name: string; email: string }, values: { user_name: string; email: string }) => {
    try {
      refuseAdminCollision({ id: 'a', ...held }, values);
    } catch (error) {
      return (error as AdminCollision).address;
    }
    return undefined;
  };
  // A database whose ctype is C folds ASCII letters only: there the admin holds the e-mail, not the userName.
  t.equal(addressOf({ user_name: 'ÉMILE@school.example', email: 'boss@school.example' }, { user_name: 'émile@school.example', email: 'BOSS@school.example' }), 'BOSS@school.example', 'an address held under ASCII folding first');
  // Elsewhere lower() folds É too: only the userName can be what it found.
  t.equal(addressOf({ user_name: 'ÉMILE@school.example', email: 'boss@school.example' }, { user_name: 'émile@school.example', email: 'other@school.example' }), 'émile@school.example', 'then one held under full folding');
  const error = adminCollisionError(new AdminCollision('admin-1', 'u9@school.example', 'IT.Admin@school.example'));
  t.ok(error instanceof ScimError);
  t.match(error, { status: 409, scimType: 'uniqueness', audited: true, detail: /"IT.Admin@school.example" belongs to a portal admin account/ });
  t.same(adminCollisionEvent(actor, new AdminCollision('admin-1', 'Pupil1@School.example', 'Pupil1@School.example')), {
    tenantId: 't-1',
    action: 'conflict',
    objectType: 'user',
    objectId: 'admin-1',
    objectRef: 'Pupil1@School.example',
    outcome: 'conflict',
    credentialId: 'c-1',
    requestId: 'r-1',
    details: { reason: 'admin-collision' },
  });
});

t.test('the admin guard of a change: only the addresses it takes', async (t) => {
  const row = { user_name: 'Pupil1@School.example', scim: { emails: [{ type: 'work', value: 'pupil.one@school.example' }] } };
  t.same(addressesTaken(row, { user_name: 'pupil1@school.example', email: 'PUPIL.ONE@school.example' }), [], 'both kept, in any case of ASCII letters');
  t.same(addressesTaken(row, { user_name: 'Pupil1@School.example', email: 'new@school.example' }), ['new@school.example'], 'a new e-mail');
  t.same(addressesTaken(row, { user_name: 'pupil.one@school.example', email: null }), [], "a userName the account's e-mail was");
  t.same(addressesTaken(row, { user_name: 'p2@school.example', email: 'p3@school.example' }), ['p2@school.example', 'p3@school.example'], 'both new');
  t.same(addressesTaken({ user_name: 'Émile@school.example', scim: {} }, { user_name: 'émile@school.example', email: null }), ['émile@school.example'], 'other letters in another case: guarded as a new address');
  t.same(addressesTaken({ user_name: 'u@school.example', scim: { emails: 'none' } }, { user_name: 'u@school.example', email: 'U@school.example' }), [], 'a document without a list of e-mails');
});

t.test('roles: app roles, then the school extension, then userType, through the mapping; never admin', async (t) => {
  t.equal(resolveRole({}), 'student', 'the default');
  t.equal(resolveRole({ userType: 'Teacher' }), 'teacher');
  t.equal(resolveRole({ userType: 'Teacher', [PORTAL]: { role: 'Elev' } }), 'student', 'the extension before userType');
  t.equal(resolveRole({ roles: [{ value: 'Teacher' }], [PORTAL]: { role: 'Student' } }), 'teacher', 'app roles first');
  t.equal(resolveRole({ roles: [{ value: 'Student' }, { value: 'Teacher', primary: true }] }), 'teacher', 'the primary app role first');
  t.equal(resolveRole({ userType: 'Kurator' }, { kurator: 'staff' }), 'staff', "the tenant's mapping");
  t.equal(resolveRole({ userType: 'Rektor' }, { rektor: 'admin' }), 'student', 'a mapping to admin is ignored');
});

t.test('deprovisioning: deactivation and reactivation are their own actions', async (t) => {
  t.equal(changeAction(true, false), 'deactivate');
  t.equal(changeAction(false, true), 'reactivate');
  t.equal(changeAction(true, true), 'update');
  t.equal(changeAction(false, false), 'update');
  t.ok(isActive(undefined), 'absent is active');
  t.notOk(isActive(false));
  t.ok(isActive('false'), 'only the boolean false deactivates: the dialect turns "False" into false before');
  t.equal(activeAfterReplace(undefined, false), false, 'a replace that does not say keeps a deactivated account deactivated');
  t.equal(activeAfterReplace(undefined, true), true, 'and an active one active');
  t.equal(activeAfterReplace(true, false), true, 'a replace that says active reactivates');
  t.equal(activeAfterReplace(false, true), false, 'and one that says inactive deactivates');
});

t.test('class members: net change of operations in order, every named member checked', async (t) => {
  t.equal(netMemberChange([]), undefined);
  t.same(netMemberChange([{ kind: 'add', ids: ['a', 'b'] }]), { kind: 'edit', remove: [], add: ['a', 'b'] });
  t.same(netMemberChange([{ kind: 'add', ids: ['a', 'b'] }, { kind: 'remove', ids: ['b', 'c'] }]), { kind: 'edit', remove: ['b', 'c'], add: ['a'] }, 'a later remove wins');
  t.same(netMemberChange([{ kind: 'remove', ids: ['a'] }, { kind: 'add', ids: ['a'] }]), { kind: 'edit', remove: [], add: ['a'] }, 'a later add wins');
  t.same(netMemberChange([{ kind: 'add', ids: ['a'] }, { kind: 'replace', ids: ['b'] }, { kind: 'add', ids: ['c'] }]), { kind: 'replace', members: ['b', 'c'] });
  t.same(netMemberChange([{ kind: 'replace', ids: ['b', 'c'] }, { kind: 'remove', ids: ['c'] }]), { kind: 'replace', members: ['b'] });
  t.same(netMemberChange([{ kind: 'add', ids: ['a'] }, { kind: 'removeAll' }]), { kind: 'replace', members: [] });
  t.same(namedMembers([{ kind: 'add', ids: ['a'] }, { kind: 'remove', ids: ['a', 'z'] }, { kind: 'replace', ids: ['b'] }]), ['a', 'b'], 'removed ids need not be users');
  const many = notUsersError(['1', '2', '3', '4', '5', '6', '7']);
  t.match(many, { status: 400, scimType: 'invalidValue', detail: 'Members must be users of this tenant (nested groups are not supported); not a user here: 1, 2, 3, 4, 5 and 2 more.' });
});

t.test('audit events name what changed, never values', async (t) => {
  t.same(userCreated(actor, 'teacher'), { action: 'create', objectType: 'user', details: { role: 'teacher' }, credentialId: 'c-1', requestId: 'r-1' });
  const before = { attributes: { displayName: 'A', title: 'x' }, active: true, role: 'student' as const };
  t.equal(userChanged(actor, before, before), undefined, 'no change, no event');
  t.match(userChanged(actor, before, { attributes: { displayName: 'B', title: 'x' }, active: false, role: 'teacher' }), {
    action: 'deactivate',
    details: { changed: ['displayName'], role: 'teacher' },
  });
  t.notMatch(JSON.stringify(userChanged(actor, before, { ...before, attributes: { displayName: 'Secret' } })), /Secret/);
  t.match(userChanged(actor, before, { ...before, role: 'teacher' }), { action: 'update', details: { changed: [], role: 'teacher' } }, 'a role the mapping decides anew is a change');
  t.match(classChanged(actor, ['displayName']), { details: { changed: ['displayName'] }, memberCount: { key: 'memberChanges', listChanged: true } });
});

t.test('the user planners: guards when nothing was read, decisions when it was', async (t) => {
  const v = values();
  const unread = planUserCreate(actor, ['school.example'], v, 'unread', 'new-1');
  t.match(unread, { kind: 'create', id: 'new-1', guards: { noAdmin: ['Pupil1@School.example'], nothingToAdopt: { adoptable: [true] } }, events: { audit: { action: 'create' } } });
  t.same(planUserCreate(actor, ['school.example'], v, { admin: undefined, byExternalId: undefined, byAddress: undefined }, 'new-1'), unread, 'nothing in the way: the same plan');
  t.throws(() => planUserCreate(actor, [], v, { admin: account({ role: 'admin' }), byExternalId: undefined, byAddress: account() }, 'new-1'), AdminCollision, 'rule 3 before adoption');
  t.match(planUserCreate(actor, [], v, { admin: undefined, byExternalId: undefined, byAddress: account({ id: 'old', version: 7 }) }, 'new-1'), {
    kind: 'update',
    id: 'old',
    adopt: true,
    guards: { version: 7 },
    events: { audit: { action: 'adopt', details: { matchedBy: 'address' } } },
  });
  const row: AccountResource = { id: 'a-1', external_id: 'entra-1', user_name: v.user_name, active: true, scim: {}, version: 3, created_at: new Date(0), updated_at: new Date(0), role: 'student' };
  const change = planUserChange(actor, row, { before: { displayName: 'A' }, after: { displayName: 'B' } }, { ...v, active: false }, 'unread');
  t.match(change, { kind: 'update', adopt: false, guards: { version: 3 }, events: { audit: { action: 'deactivate', details: { changed: ['displayName'] } } } });
  t.throws(() => planUserChange(actor, row, { before: {}, after: {} }, v, account({ role: 'admin' })), AdminCollision);
  t.same(planUserDelete(actor, 'a-1', undefined).guards, { version: undefined }, 'a delete without If-Match takes any live version');
});

t.test('the class planners: adoption, unique names, members that are not users', async (t) => {
  const classValues = { display_name: 'Class 7A', external_id: 'class-1', school_id: null, scim: {} };
  t.match(planClassCreate(actor, 'unique', classValues, ['u1'], 'unread', 'c-new'), { kind: 'create', guards: { nothingToAdopt: true, uniqueName: true, usersExist: ['u1'] } });
  t.match(planClassCreate(actor, 'repeat', classValues, [], 'unread', 'c-new'), { guards: { uniqueName: false } });
  t.match(thrown(() => planClassCreate(actor, 'unique', classValues, ['u1'], { notUsers: ['u1'], nameTaken: false }, 'c-new')), { status: 400, scimType: 'invalidValue' });
  t.match(thrown(() => planClassCreate(actor, 'unique', classValues, [], { notUsers: [], nameTaken: true }, 'c-new')), { status: 409, scimType: 'uniqueness' });
  const manual = { tenant_id: 't-1', id: 'old', managed_by: 'manual', display_name: 'Old', external_id: 'class-1', school_id: null, scim: {}, version: 2, created_at: new Date(0), updated_at: new Date(0) } satisfies ClassRow;
  t.match(planClassCreate(actor, 'unique', classValues, ['u1'], { notUsers: [], nameTaken: false, adoptable: manual }, 'c-new'), {
    kind: 'update',
    id: 'old',
    adopt: true,
    members: { kind: 'edit', add: ['u1'] },
    events: { audit: { action: 'adopt' } },
  });
  const synced = { ...manual, managed_by: 'sync' as const, display_name: 'Class 7A' };
  const sameName = planClassChange(actor, 'unique', 'old', synced, { values: { ...classValues, display_name: 'CLASS 7a' }, changed: ['displayName'], members: undefined, named: [] }, 'unread');
  t.match(sameName, { guards: { uniqueName: true, version: 2 } }, 'a name changed in case only is checked too: the database decides what is the same name');
  const renamed = planClassChange(actor, 'unique', 'old', synced, { values: { ...classValues, display_name: 'Class 8B' }, changed: ['displayName'], members: undefined, named: [] }, 'unread');
  t.match(renamed, { guards: { uniqueName: true } });
  t.match(
    thrown(() =>
      planClassChange(actor, 'unique', 'old', synced, { values: { ...classValues, display_name: 'Class 8B' }, changed: ['displayName'], members: undefined, named: [] }, { notUsers: [], nameTaken: true }),
    ),
    { status: 409 },
  );
});

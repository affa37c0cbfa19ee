"""Invariants of the Terraform in terraform/, checked on the parsed HCL (python-hcl2).

Run by scripts/terraform-check.sh (plain unittest). Each invariant is a function that
returns the list of violations it finds; the tests assert that list is empty for the real
code, and TestInvariantsCanFail breaks a copy of terraform/ once per invariant to prove
each check does report a violation.

Values are resolved the way the example environment uses the modules: `var.X` inside a
module is the argument the environment passes (itself resolved to the environment's
default) or else the module's own default.
"""

from __future__ import annotations

import re
import shutil
import tempfile
import unittest
from pathlib import Path

import hcl2

REPO = Path(__file__).resolve().parents[2]
TERRAFORM = REPO / "terraform"
ENV = "envs/example"

OPEN_CIDRS = {"0.0.0.0/0", "::/0"}
MIN_RETENTION_DAYS = 2190

# The only bucket allowed without a customer-managed key, and why: AWS delivers S3 server
# access logs and ALB access logs only to buckets whose default encryption is SSE-S3.
SSE_S3_EXCEPTIONS = {("modules/storage", "logs")}


# --- Loading -------------------------------------------------------------------------------


def unquote(value):
    """python-hcl2 keeps the quotes of string literals and keys; drop them, and drop its
    bookkeeping keys."""
    if isinstance(value, str):
        if len(value) >= 2 and value[0] == '"' and value[-1] == '"':
            return value[1:-1]
        return value
    if isinstance(value, list):
        return [unquote(v) for v in value]
    if isinstance(value, dict):
        return {
            unquote(k): unquote(v)
            for k, v in value.items()
            if k not in ("__is_block__", "__comments__", "__inline_comments__")
        }
    return value


class Module:
    def __init__(self, path: str):
        self.path = path
        self.resources: dict[tuple[str, str], dict] = {}
        self.data: dict[tuple[str, str], dict] = {}
        self.variables: dict[str, dict] = {}
        self.locals: dict[str, object] = {}
        self.module_calls: dict[str, dict] = {}

    def of_type(self, rtype: str) -> dict[str, dict]:
        return {name: body for (t, name), body in self.resources.items() if t == rtype}


def load(root: Path) -> dict[str, Module]:
    modules: dict[str, Module] = {}
    for tf in sorted(root.rglob("*.tf")):
        if ".terraform" in tf.parts:
            continue
        rel = tf.parent.relative_to(root).as_posix()
        mod = modules.setdefault(rel, Module(rel))
        with tf.open() as fh:
            doc = unquote(hcl2.load(fh))
        for block in doc.get("resource", []):
            for rtype, named in block.items():
                for name, body in named.items():
                    mod.resources[(rtype, name)] = body
        for block in doc.get("data", []):
            for dtype, named in block.items():
                for name, body in named.items():
                    mod.data[(dtype, name)] = body
        for block in doc.get("variable", []):
            for name, body in block.items():
                mod.variables[name] = body
        for block in doc.get("locals", []):
            mod.locals.update(block)
        for block in doc.get("module", []):
            for name, body in block.items():
                mod.module_calls[name] = body
    return modules


# --- Resolution ----------------------------------------------------------------------------

UNKNOWN = object()
VAR_ONLY = re.compile(r"^\$\{var\.([A-Za-z0-9_]+)\}$")
TOSET_VAR = re.compile(r"^\$\{toset\(var\.([A-Za-z0-9_]+)\)\}$")


def env_call_for(modules: dict[str, Module], module_path: str) -> dict | None:
    env = modules.get(ENV)
    if env is None:
        return None
    for call in env.module_calls.values():
        source = call.get("source", "")
        if (Path(ENV) / source).as_posix().endswith(module_path) and Path(
            source
        ).name == Path(module_path).name:
            return call
    return None


def resolve_var(modules: dict[str, Module], module_path: str, name: str):
    """Value of var.NAME in a module as the example environment sets it."""
    mod = modules[module_path]
    if module_path != ENV:
        call = env_call_for(modules, module_path)
        if call is not None and name in call:
            return resolve(modules, ENV, call[name])
    variable = mod.variables.get(name)
    if variable is None or "default" not in variable:
        return UNKNOWN
    return variable["default"]


def resolve(modules: dict[str, Module], module_path: str, value):
    if isinstance(value, str):
        m = VAR_ONLY.match(value) or TOSET_VAR.match(value)
        if m:
            return resolve_var(modules, module_path, m.group(1))
        if value.startswith("${"):
            return UNKNOWN
    return value


def module_default(modules: dict[str, Module], module_path: str, value):
    """The value with var.X replaced by the module's own default (no environment)."""
    if isinstance(value, str):
        m = VAR_ONLY.match(value)
        if m:
            variable = modules[module_path].variables.get(m.group(1), {})
            return variable.get("default", UNKNOWN)
    return value


def strings_in(value) -> list[str]:
    if isinstance(value, str):
        return [value]
    if isinstance(value, list):
        return [s for v in value for s in strings_in(v)]
    if isinstance(value, dict):
        return [s for v in value.values() for s in strings_in(v)]
    return []


def referenced_values(modules: dict[str, Module], module_path: str, body) -> list[str]:
    """Every string reachable from the var.* references of body, following local.* one
    level (enough for for_each over locals built from variables)."""
    text = repr(body)
    mod = modules[module_path]
    for local in set(re.findall(r"local\.([A-Za-z0-9_]+)", text)):
        text += repr(mod.locals.get(local, ""))
    found: list[str] = []
    for name in set(re.findall(r"var\.([A-Za-z0-9_]+)", text)):
        value = resolve_var(modules, module_path, name)
        if value is not UNKNOWN:
            found.extend(strings_in(value))
        default = modules[module_path].variables.get(name, {}).get("default")
        found.extend(strings_in(default))
    return found


def block(body: dict, *path: str):
    """Follow nested blocks (each a list of one dict in python-hcl2's output)."""
    current = body
    for key in path:
        if not isinstance(current, dict) or key not in current:
            return None
        current = current[key]
        if isinstance(current, list) and current and isinstance(current[0], dict):
            current = current[0]
    return current


def refers_to(value, rtype: str, name: str) -> bool:
    return isinstance(value, str) and re.search(
        rf"\b{re.escape(rtype)}\.{re.escape(name)}\.(id|arn|bucket)\b", value
    ) is not None


def companion(mod: Module, rtype: str, bucket: str) -> dict | None:
    for body in mod.of_type(rtype).values():
        if refers_to(body.get("bucket"), "aws_s3_bucket", bucket):
            return body
    return None


# --- Invariants ----------------------------------------------------------------------------


def check_bucket_encryption(modules: dict[str, Module]) -> list[str]:
    problems = []
    for mod in modules.values():
        for name in mod.of_type("aws_s3_bucket"):
            where = f"{mod.path}: aws_s3_bucket.{name}"
            sse = companion(mod, "aws_s3_bucket_server_side_encryption_configuration", name)
            if sse is None:
                problems.append(f"{where} has no server-side encryption configuration")
                continue
            default = block(sse, "rule", "apply_server_side_encryption_by_default") or {}
            algorithm = default.get("sse_algorithm")
            if (mod.path, name) in SSE_S3_EXCEPTIONS:
                if algorithm != "AES256":
                    problems.append(f"{where}: the log-delivery bucket must use AES256")
                continue
            if algorithm != "aws:kms":
                problems.append(f"{where} is encrypted with {algorithm!r}, not aws:kms")
            if not default.get("kms_master_key_id"):
                problems.append(f"{where} names no customer-managed KMS key")
    for path, name in SSE_S3_EXCEPTIONS:
        if ("aws_s3_bucket", name) not in modules.get(path, Module(path)).resources:
            problems.append(f"stale SSE-S3 exception {path}: {name}")
    return problems


def check_bucket_public_access(modules: dict[str, Module]) -> list[str]:
    flags = ("block_public_acls", "block_public_policy", "ignore_public_acls", "restrict_public_buckets")
    problems = []
    for mod in modules.values():
        for name in mod.of_type("aws_s3_bucket"):
            pab = companion(mod, "aws_s3_bucket_public_access_block", name)
            if pab is None:
                problems.append(f"{mod.path}: aws_s3_bucket.{name} has no public access block")
                continue
            for flag in flags:
                if pab.get(flag) is not True:
                    problems.append(f"{mod.path}: aws_s3_bucket.{name}: {flag} is not true")
    return problems


def policy_statements(mod: Module, policy_ref: str) -> list[dict]:
    m = re.search(r"data\.aws_iam_policy_document\.([A-Za-z0-9_]+)\.json", policy_ref or "")
    if not m:
        return []
    doc = mod.data.get(("aws_iam_policy_document", m.group(1)), {})
    return doc.get("statement", [])


def check_bucket_policies(modules: dict[str, Module]) -> list[str]:
    """TLS-only everywhere; KMS buckets also refuse PUTs naming another algorithm."""
    problems = []
    for mod in modules.values():
        for name in mod.of_type("aws_s3_bucket"):
            where = f"{mod.path}: aws_s3_bucket.{name}"
            policy = companion(mod, "aws_s3_bucket_policy", name)
            statements = policy_statements(mod, (policy or {}).get("policy", ""))
            denies = [s for s in statements if s.get("effect") == "Deny"]

            def denies_on(variable: str) -> bool:
                return any(
                    c.get("variable") == variable for s in denies for c in s.get("condition", [])
                )

            if not denies_on("aws:SecureTransport"):
                problems.append(f"{where}: no Deny on aws:SecureTransport = false")
            if (mod.path, name) not in SSE_S3_EXCEPTIONS and not denies_on(
                "s3:x-amz-server-side-encryption"
            ):
                problems.append(f"{where}: no Deny of non-aws:kms PUTs")
    return problems


def check_database(modules: dict[str, Module]) -> list[str]:
    problems = []
    clusters = [(m, n, b) for m in modules.values() for n, b in m.of_type("aws_rds_cluster").items()]
    if not clusters:
        problems.append("no aws_rds_cluster found")
    for mod, name, body in clusters:
        where = f"{mod.path}: aws_rds_cluster.{name}"
        if body.get("storage_encrypted") is not True:
            problems.append(f"{where}: storage_encrypted is not true")
        if not body.get("kms_key_id"):
            problems.append(f"{where}: no kms_key_id")
        if body.get("iam_database_authentication_enabled") is not True:
            problems.append(f"{where}: IAM database authentication is off")
        if body.get("deletion_protection") is not True:
            problems.append(f"{where}: deletion protection is off")
        retention = resolve(modules, mod.path, body.get("backup_retention_period"))
        if not isinstance(retention, int) or retention < 30:
            problems.append(f"{where}: backup retention {retention!r} < 30 days")
        force_ssl = False
        for pg in mod.of_type("aws_rds_cluster_parameter_group").values():
            for p in pg.get("parameter", []):
                if p.get("name") == "rds.force_ssl" and str(p.get("value")) == "1":
                    force_ssl = True
        if not force_ssl:
            problems.append(f"{where}: no cluster parameter rds.force_ssl = 1")
    for mod in modules.values():
        for name, body in mod.of_type("aws_rds_cluster_instance").items():
            if body.get("publicly_accessible") is not False:
                problems.append(f"{mod.path}: aws_rds_cluster_instance.{name} is not explicitly private")
        for name, body in mod.of_type("aws_db_instance").items():
            if body.get("publicly_accessible") is not False or body.get("storage_encrypted") is not True:
                problems.append(f"{mod.path}: aws_db_instance.{name} public or unencrypted")
    return problems


def check_ingress(modules: dict[str, Module]) -> list[str]:
    """No ingress from anywhere, except 443 on the ALB's security group."""
    problems = []
    for mod in modules.values():
        for name, body in mod.of_type("aws_security_group").items():
            if "ingress" in body:
                problems.append(f"{mod.path}: aws_security_group.{name} has inline ingress (use rule resources)")
        for name, body in mod.of_type("aws_security_group_rule").items():
            problems.append(f"{mod.path}: aws_security_group_rule.{name}: use aws_vpc_security_group_*_rule")
        for name, body in mod.of_type("aws_vpc_security_group_ingress_rule").items():
            sources = []
            for key in ("cidr_ipv4", "cidr_ipv6"):
                if key in body:
                    value = body[key]
                    if isinstance(value, str) and value.startswith("${"):
                        sources.extend(referenced_values(modules, mod.path, body))
                    else:
                        sources.append(value)
            if not OPEN_CIDRS.intersection(sources):
                continue
            is_alb_443 = (
                mod.path == "modules/ingress"
                and refers_to(body.get("security_group_id"), "aws_security_group", "alb")
                and body.get("from_port") == 443
                and body.get("to_port") == 443
            )
            if not is_alb_443:
                problems.append(
                    f"{mod.path}: aws_vpc_security_group_ingress_rule.{name} is open to the internet"
                )
    return problems


def check_log_groups(modules: dict[str, Module]) -> list[str]:
    problems = []
    for mod in modules.values():
        for name, body in mod.of_type("aws_cloudwatch_log_group").items():
            where = f"{mod.path}: aws_cloudwatch_log_group.{name}"
            if not body.get("kms_key_id"):
                problems.append(f"{where}: no kms_key_id")
            raw = body.get("retention_in_days")
            for label, value in (
                ("as deployed", resolve(modules, mod.path, raw)),
                ("module default", module_default(modules, mod.path, raw)),
            ):
                if not isinstance(value, int) or value < MIN_RETENTION_DAYS:
                    problems.append(f"{where}: retention {value!r} ({label}) < {MIN_RETENTION_DAYS}")
    return problems


def check_ecs_exec_off(modules: dict[str, Module]) -> list[str]:
    problems = []
    services = [(m, n, b) for m in modules.values() for n, b in m.of_type("aws_ecs_service").items()]
    if not services:
        problems.append("no aws_ecs_service found")
    for mod, name, body in services:
        value = resolve(modules, mod.path, body.get("enable_execute_command", False))
        if value is not False:
            problems.append(f"{mod.path}: aws_ecs_service.{name}: ECS Exec is {value!r} in {ENV}")
        if module_default(modules, mod.path, body.get("enable_execute_command", False)) is not False:
            problems.append(f"{mod.path}: aws_ecs_service.{name}: ECS Exec on by default")
    return problems


def check_container(modules: dict[str, Module]) -> list[str]:
    """Hearth's container: read-only root, non-root user, secrets only via `secrets`."""
    problems = []
    mod = modules.get("modules/compute")
    if mod is None:
        return ["modules/compute not found"]
    container = repr(mod.locals.get("hearth_container", ""))
    environment = repr(mod.locals.get("hearth_environment", ""))
    if "'readonlyRootFilesystem': True" not in container:
        problems.append("hearth container: readonlyRootFilesystem is not true")
    user = re.search(r"'user': '([^']*)'", container)
    if not user or user.group(1).split(":")[0] in ("", "0", "root"):
        problems.append("hearth container: no non-root user")
    if "'secrets': '${local.hearth_secrets}'" not in container:
        problems.append("hearth container: secrets are not passed through `secrets`")
    for secret in ("DATABASE_URL", "HEARTH_MIGRATION_DATABASE_URL", "HEARTH_APP_SESSION_KEY"):
        if secret in environment:
            problems.append(f"hearth container: {secret} in plain environment")
        if secret not in strings_in(mod.variables.get("secret_names", {}).get("default")):
            problems.append(f"hearth container: {secret} is not a Secrets Manager secret")
    return problems


def check_kms_rotation(modules: dict[str, Module]) -> list[str]:
    problems = []
    keys = [(m, n, b) for m in modules.values() for n, b in m.of_type("aws_kms_key").items()]
    if not keys:
        problems.append("no aws_kms_key found")
    for mod, name, body in keys:
        if body.get("enable_key_rotation") is not True:
            problems.append(f"{mod.path}: aws_kms_key.{name}: rotation is off")
    return problems


def check_audit_object_lock(modules: dict[str, Module]) -> list[str]:
    problems = []
    for path, name in (("modules/storage", "audit"), ("modules/audit", "trail")):
        mod = modules.get(path)
        body = mod.resources.get(("aws_s3_bucket", name)) if mod else None
        where = f"{path}: aws_s3_bucket.{name}"
        if body is None:
            problems.append(f"{where} not found")
            continue
        if body.get("object_lock_enabled") is not True:
            problems.append(f"{where}: Object Lock is not enabled")
        lock = companion(mod, "aws_s3_bucket_object_lock_configuration", name)
        retention = block(lock or {}, "rule", "default_retention") or {}
        if retention.get("mode") != "COMPLIANCE":
            problems.append(f"{where}: default retention mode {retention.get('mode')!r}, not COMPLIANCE")
        days = resolve(modules, path, retention.get("days"))
        if not isinstance(days, int) or days < MIN_RETENTION_DAYS:
            problems.append(f"{where}: retention {days!r} days < {MIN_RETENTION_DAYS}")
    return problems


CHECKS = {
    "bucket_encryption": check_bucket_encryption,
    "bucket_public_access": check_bucket_public_access,
    "bucket_policies": check_bucket_policies,
    "database": check_database,
    "ingress": check_ingress,
    "log_groups": check_log_groups,
    "ecs_exec_off": check_ecs_exec_off,
    "container": check_container,
    "kms_rotation": check_kms_rotation,
    "audit_object_lock": check_audit_object_lock,
}


class TestInvariants(unittest.TestCase):
    @classmethod
    def setUpClass(cls):
        cls.modules = load(TERRAFORM)

    def assertHolds(self, check: str):
        problems = CHECKS[check](self.modules)
        self.assertEqual(problems, [], "\n".join(problems))

    def test_every_bucket_is_kms_encrypted(self):
        self.assertHolds("bucket_encryption")

    def test_every_bucket_blocks_public_access(self):
        self.assertHolds("bucket_public_access")

    def test_every_bucket_is_tls_only_and_refuses_non_kms_puts(self):
        self.assertHolds("bucket_policies")

    def test_database_is_private_encrypted_and_tls_only(self):
        self.assertHolds("database")

    def test_no_ingress_from_anywhere_but_alb_443(self):
        self.assertHolds("ingress")

    def test_log_groups_encrypted_and_kept_six_years(self):
        self.assertHolds("log_groups")

    def test_ecs_exec_off_in_example(self):
        self.assertHolds("ecs_exec_off")

    def test_container_read_only_non_root_secrets(self):
        self.assertHolds("container")

    def test_kms_keys_rotate(self):
        self.assertHolds("kms_rotation")

    def test_audit_buckets_object_lock_compliance(self):
        self.assertHolds("audit_object_lock")


# One breakage per invariant: (check, file under terraform/, text, replacement).
MUTATIONS = [
    ("bucket_encryption", "modules/storage/main.tf",
     'sse_algorithm     = "aws:kms"\n      kms_master_key_id = var.storage_kms_key_arn',
     'sse_algorithm     = "AES256"'),
    ("bucket_public_access", "modules/audit/main.tf",
     "restrict_public_buckets = true", "restrict_public_buckets = false"),
    ("bucket_policies", "modules/storage/main.tf",
     'variable = "s3:x-amz-server-side-encryption"\n      values   = ["aws:kms"]\n    }\n  }\n\n  statement {\n    sid       = "DenyOtherKmsKeys"\n    effect    = "Deny"\n    actions   = ["s3:PutObject"]\n    resources = ["${aws_s3_bucket.exports.arn}/*"]',
     'variable = "s3:x-amz-server-side-encryption-context"\n      values   = ["aws:kms"]\n    }\n  }\n\n  statement {\n    sid       = "DenyOtherKmsKeys"\n    effect    = "Deny"\n    actions   = ["s3:PutObject"]\n    resources = ["${aws_s3_bucket.exports.arn}/*"]'),
    ("database", "modules/database/main.tf",
     "publicly_accessible                   = false", "publicly_accessible                   = true"),
    ("database", "modules/database/main.tf",
     "storage_encrypted                   = true", "storage_encrypted                   = false"),
    ("ingress", "modules/compute/main.tf",
     "referenced_security_group_id = var.alb_security_group_id",
     'cidr_ipv4                    = "0.0.0.0/0"'),
    ("ingress", "envs/example/variables.tf",
     'default = {\n    "st-mary" = { port = 2575, cidr_blocks = ["203.0.113.0/28"] }',
     'default = {\n    "st-mary" = { port = 2575, cidr_blocks = ["0.0.0.0/0"] }'),
    ("log_groups", "envs/example/variables.tf",
     "default     = 2192", "default     = 365"),
    ("log_groups", "modules/network/main.tf",
     "kms_key_id        = var.logs_kms_key_arn", ""),
    ("ecs_exec_off", "envs/example/variables.tf",
     'ECS Exec into running tasks. Off: the image has no shell; run one-off commands as tasks."\n  type        = bool\n  default     = false',
     'ECS Exec into running tasks. Off: the image has no shell; run one-off commands as tasks."\n  type        = bool\n  default     = true'),
    ("container", "modules/compute/main.tf",
     "readonlyRootFilesystem = true\n    privileged             = false\n    stopTimeout",
     "readonlyRootFilesystem = false\n    privileged             = false\n    stopTimeout"),
    ("kms_rotation", "modules/keys/main.tf",
     "enable_key_rotation     = true", "enable_key_rotation     = false"),
    ("audit_object_lock", "modules/storage/main.tf",
     'mode = "COMPLIANCE"', 'mode = "GOVERNANCE"'),
]


class TestInvariantsCanFail(unittest.TestCase):
    """Break a copy of terraform/ once per invariant: each check must notice."""

    def test_every_check_has_a_mutation(self):
        self.assertEqual(set(CHECKS), {m[0] for m in MUTATIONS})

    def test_each_mutation_is_caught(self):
        for check, rel, old, new in MUTATIONS:
            with self.subTest(check=check, file=rel, breaks=old.splitlines()[0]):
                with tempfile.TemporaryDirectory() as tmp:
                    copy = Path(tmp) / "terraform"
                    shutil.copytree(TERRAFORM, copy, ignore=shutil.ignore_patterns(".terraform"))
                    target = copy / rel
                    text = target.read_text()
                    self.assertEqual(text.count(old), 1, f"mutation text not found once in {rel}")
                    target.write_text(text.replace(old, new))
                    self.assertEqual(CHECKS[check](load(copy)) != [], True,
                                     f"{check} did not notice the mutation of {rel}")


if __name__ == "__main__":
    unittest.main()

"""The AWS-compatible endpoint for this machine, driven by `cargo xtask` (never by a test binary).

  python3 emulator.py serve PORT          moto, single-threaded (its threaded server is not atomic:
                                          concurrent conditional writes oversell), until killed
  python3 emulator.py tables TEMPLATE OUT the DynamoDB tables of template.yaml as CreateTable
                                          inputs (JSON), so tests create exactly the template's
                                          keys and indexes: one source of truth
  python3 emulator.py provision TEMPLATE PREFIX OUT
                                          creates the template's tables and queues (redrive
                                          included) on AWS_ENDPOINT_URL, names prefixed, and
                                          writes the functions' environment (the template's
                                          Globals, every !Ref resolved) as JSON; also the user
                                          pool, its client and groups, and the JWT authorizer's
                                          settings (EMULATED_*)
  python3 emulator.py user POOL EMAIL [GROUP]
                                          a confirmed user of the emulated user pool, with the
                                          password in EMULATED_USER_PASSWORD (not on the command
                                          line, which gets logged)
  python3 emulator.py routes TEMPLATE OUT the HTTP API's routes (method, path, function binary,
                                          whether the JWT authorizer guards it) as JSON, for the
                                          local gateway
  python3 emulator.py translate TEMPLATE OUT
                                          the template as plain CloudFormation (JSON), offline:
                                          what cfn-lint checks and the emulator provisions
"""

import json
import os
import sys


def serve(port: int) -> None:
    import moto.server
    import werkzeug.serving
    from werkzeug.serving import run_simple

    # One request at a time, so many clients wait in the accept queue: 128 (werkzeug's default)
    # makes the 129th connect time out; let them queue (the kernel caps it at somaxconn).
    werkzeug.serving.BaseWSGIServer.request_queue_size = 4096

    app = moto.server.DomainDispatcherApplication(moto.server.create_backend_app)
    # moto's own handler (5.2.5+) keeps its request parsing quirks out of werkzeug's way.
    handler = getattr(moto.server, "MotoRequestHandler", None)
    print(f"emulator listening on http://127.0.0.1:{port}", flush=True)
    run_simple("127.0.0.1", port, app, threaded=False, processes=1, request_handler=handler)


def load(template: str) -> dict:
    """template.yaml with its intrinsic functions (!Ref, !GetAtt...) as CloudFormation's JSON form."""
    from samtranslator.yaml_helper import yaml_parse

    with open(template, encoding="utf-8") as f:
        return yaml_parse(f.read())


def table_specs(doc: dict) -> dict:
    """Each AWS::DynamoDB::Table of the template as CreateTable input (without its name)."""
    specs = {}
    for name, res in doc["Resources"].items():
        if res.get("Type") != "AWS::DynamoDB::Table":
            continue
        p = res["Properties"]
        spec = {
            "AttributeDefinitions": p["AttributeDefinitions"],
            "KeySchema": p["KeySchema"],
            "BillingMode": p.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if "GlobalSecondaryIndexes" in p:
            spec["GlobalSecondaryIndexes"] = p["GlobalSecondaryIndexes"]
        specs[name] = spec
    return specs


def tables(template: str, out: str) -> None:
    specs = table_specs(load(template))
    if not specs:
        sys.exit(f"{template}: no AWS::DynamoDB::Table resources")
    with open(out, "w", encoding="utf-8") as f:
        json.dump(specs, f, indent=1, sort_keys=True)


def provision(template: str, prefix: str, out: str) -> None:
    import boto3

    doc = load(template)
    resources = doc["Resources"]
    dynamodb = boto3.client("dynamodb")
    sqs = boto3.client("sqs")
    physical = {}  # logical id -> {"Ref": ..., "Arn": ..., "QueueName": ...}

    for name, spec in table_specs(doc).items():
        table = f"{prefix}-{name}"
        dynamodb.create_table(TableName=table, **spec)
        physical[name] = {"Ref": table}

    queues = {n: r for n, r in resources.items() if r.get("Type") == "AWS::SQS::Queue"}
    # Dead-letter queues first: a redrive policy names its target's ARN.
    for name in sorted(queues, key=lambda n: "RedrivePolicy" in queues[n].get("Properties", {})):
        p = queues[name].get("Properties", {})
        attrs = {k: str(p[k]) for k in ("VisibilityTimeout", "MessageRetentionPeriod") if k in p}
        if "RedrivePolicy" in p:
            target = p["RedrivePolicy"]["deadLetterTargetArn"]["Fn::GetAtt"][0]
            attrs["RedrivePolicy"] = json.dumps(
                {"deadLetterTargetArn": physical[target]["Arn"], "maxReceiveCount": str(p["RedrivePolicy"]["maxReceiveCount"])}
            )
        queue = f"{prefix}-{name}"
        url = sqs.create_queue(QueueName=queue, Attributes=attrs)["QueueUrl"]
        arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        physical[name] = {"Ref": url, "Arn": arn, "QueueName": queue}

    # The user pool, its app client and groups, as the template has them (moto's CloudFormation
    # does not create Cognito resources, so the API calls are made here).
    cognito = boto3.client("cognito-idp")
    for name, res in resources.items():
        if res.get("Type") == "AWS::Cognito::UserPool":
            p = {k: v for k, v in res.get("Properties", {}).items() if k in ("UsernameAttributes", "AutoVerifiedAttributes", "Policies")}
            pool = cognito.create_user_pool(PoolName=f"{prefix}-{name}", **p)["UserPool"]
            physical[name] = {"Ref": pool["Id"]}
    for name, res in resources.items():
        p = res.get("Properties", {})
        if res.get("Type") == "AWS::Cognito::UserPoolClient":
            client = cognito.create_user_pool_client(
                UserPoolId=physical[p["UserPoolId"]["Ref"]]["Ref"],
                ClientName=f"{prefix}-{name}",
                GenerateSecret=p.get("GenerateSecret", False),
                ExplicitAuthFlows=p.get("ExplicitAuthFlows", []),
            )["UserPoolClient"]
            physical[name] = {"Ref": client["ClientId"]}
        elif res.get("Type") == "AWS::Cognito::UserPoolGroup":
            cognito.create_group(UserPoolId=physical[p["UserPoolId"]["Ref"]]["Ref"], GroupName=p["GroupName"])

    def resolve(value):
        if isinstance(value, dict) and "Fn::Sub" in value and isinstance(value["Fn::Sub"], str):
            import re

            names = {"AWS::Region": boto3.session.Session().region_name}
            names.update({k: v["Ref"] for k, v in physical.items()})
            return re.sub(r"\$\{([^}]+)\}", lambda m: names[m.group(1)], value["Fn::Sub"])
        if isinstance(value, dict) and "Ref" in value:
            ref = value["Ref"]
            if ref in physical:
                return physical[ref]["Ref"]
            params = doc.get("Parameters", {})
            if ref in params:
                return str(params[ref].get("Default", ""))
        if isinstance(value, (str, int, float)):
            return str(value)
        sys.exit(f"cannot resolve {value!r} outside CloudFormation")

    env = {k: resolve(v) for k, v in doc["Globals"]["Function"]["Environment"]["Variables"].items()}
    # What the event source mapping stands-in needs beyond the functions' own environment.
    for name, res in queues.items():
        env[f"EMULATED_{name.upper()}_URL"] = physical[name]["Ref"]
        env[f"EMULATED_{name.upper()}_ARN"] = physical[name]["Arn"]
    # What API Gateway's JWT authorizer is configured with: the gateway stand-in does its job.
    for res in resources.values():
        jwt = res.get("Properties", {}).get("Auth", {}).get("Authorizers", {})
        for authorizer in jwt.values() if res.get("Type") == "AWS::Serverless::HttpApi" else []:
            config = authorizer["JwtConfiguration"]
            issuer = resolve(config["issuer"])
            pool = issuer.rsplit("/", 1)[1]
            env["EMULATED_JWT_ISSUER"] = issuer
            env["EMULATED_JWT_AUDIENCE"] = ",".join(resolve(a) for a in config["audience"])
            endpoint = os.environ["AWS_ENDPOINT_URL"].rstrip("/")
            env["EMULATED_JWKS_URL"] = f"{endpoint}/{pool}/.well-known/jwks.json"
            env["EMULATED_USER_POOL_ID"] = pool
            # What the page's /config.json names: the user-pool API and the public client.
            env["EMULATED_COGNITO_ENDPOINT"] = endpoint + "/"
            env["EMULATED_COGNITO_CLIENT_ID"] = resolve(config["audience"][0])
    with open(out, "w", encoding="utf-8") as f:
        json.dump(env, f, indent=1, sort_keys=True)


def user(pool: str, email: str, password: str, group: str | None) -> None:
    """A confirmed user with a permanent password (and a group), as an operator would make one."""
    import boto3

    cognito = boto3.client("cognito-idp")
    cognito.admin_create_user(
        UserPoolId=pool,
        Username=email,
        UserAttributes=[{"Name": "email", "Value": email}, {"Name": "email_verified", "Value": "true"}],
        MessageAction="SUPPRESS",
    )
    cognito.admin_set_user_password(UserPoolId=pool, Username=email, Password=password, Permanent=True)
    if group:
        cognito.admin_add_user_to_group(UserPoolId=pool, Username=email, GroupName=group)


def routes(template: str, out: str) -> None:
    doc = load(template)
    default_auth = any(
        r.get("Properties", {}).get("Auth", {}).get("DefaultAuthorizer")
        for r in doc["Resources"].values()
        if r.get("Type") == "AWS::Serverless::HttpApi"
    )
    found = []
    for res in doc["Resources"].values():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        binary = res.get("Metadata", {}).get("BuildProperties", {}).get("Binary")
        for event in res["Properties"].get("Events", {}).values():
            if event.get("Type") != "HttpApi":
                continue
            p = event["Properties"]
            authorizer = p.get("Auth", {}).get("Authorizer")
            found.append({
                "method": p["Method"].upper(),
                "path": p["Path"],
                "function": binary,
                "authorized": default_auth and authorizer != "NONE",
            })
    with open(out, "w", encoding="utf-8") as f:
        json.dump(found, f, indent=1)


def translate(template: str, out: str) -> None:
    import os

    from samtranslator.model.exceptions import InvalidDocumentException
    from samtranslator.translator.transform import transform

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    doc = load(template)
    # What `sam package` does: local code becomes an S3 object (the translator needs a location).
    for res in doc["Resources"].values():
        if res.get("Type") == "AWS::Serverless::Function":
            res["Properties"]["CodeUri"] = "s3://firstcome-artifacts/function.zip"

    class NoPolicies:
        def load(self):
            return {}

    try:
        translated = transform(doc, {}, NoPolicies())
    except InvalidDocumentException as e:
        sys.exit("\n".join(str(c) for c in e.causes))
    check_dashboards(translated)
    with open(out, "w", encoding="utf-8") as f:
        json.dump(translated, f, indent=1, sort_keys=True)


def check_dashboards(doc: dict) -> None:
    """A dashboard body is a JSON string CloudFormation only checks at deploy time: substitute
    every ${...} (each must be a Sub variable, a pseudo parameter or a resource) and parse it."""
    import re

    resources = doc["Resources"]
    for name, res in resources.items():
        if res.get("Type") != "AWS::CloudWatch::Dashboard":
            continue
        body = res["Properties"]["DashboardBody"]
        sub = body.get("Fn::Sub") if isinstance(body, dict) else None
        text, variables = (sub, {}) if isinstance(sub, str) else (sub[0], sub[1])

        def resolve(m):
            key = m.group(1)
            if key in variables or key.startswith("AWS::") or key.split(".")[0] in resources:
                return "x"
            sys.exit(f"{name}: ${{{key}}} is neither a Sub variable, a pseudo parameter nor a resource")

        try:
            parsed = json.loads(re.sub(r"\$\{([^}!]+)\}", resolve, text))
        except json.JSONDecodeError as e:
            sys.exit(f"{name}: the dashboard body is not JSON: {e}")
        if not parsed.get("widgets"):
            sys.exit(f"{name}: the dashboard has no widgets")
        for alarm in variables:
            value = variables[alarm]
            if isinstance(value, dict) and "Fn::GetAtt" in value and value["Fn::GetAtt"][0] not in resources:
                sys.exit(f"{name}: {alarm} refers to a missing resource")


if __name__ == "__main__":
    if len(sys.argv) == 3 and sys.argv[1] == "serve":
        serve(int(sys.argv[2]))
    elif len(sys.argv) == 4 and sys.argv[1] == "tables":
        tables(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 5 and sys.argv[1] == "provision":
        provision(sys.argv[2], sys.argv[3], sys.argv[4])
    elif len(sys.argv) in (4, 5) and sys.argv[1] == "user":
        user(sys.argv[2], sys.argv[3], os.environ["EMULATED_USER_PASSWORD"], sys.argv[4] if len(sys.argv) == 5 else None)
    elif len(sys.argv) == 4 and sys.argv[1] == "routes":
        routes(sys.argv[2], sys.argv[3])
    elif len(sys.argv) == 4 and sys.argv[1] == "translate":
        translate(sys.argv[2], sys.argv[3])
    else:
        sys.exit(__doc__)

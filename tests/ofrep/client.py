"""Evaluates flags through the real OpenFeature Python SDK and its OFREP
provider, and compares what the SDK reports with what the caller expects.

    python client.py < cases.json

stdin is a JSON object:

    {"cases": [{"base": "http://127.0.0.1:8080/namespaces/team-a",
                "flag": "checkout", "default": "fallback",
                "token": "s3cret",                     # optional: sent as a bearer token
                "targetingKey": "customer-1",          # optional
                "attributes": {"realm": "NA"},          # optional
                "expect": {"value": "T1", "variant": "T1", "reason": "SPLIT",
                           "error_code": null, "metadata": {"assignment": "allocation"}}}]}

Each case is evaluated with `get_string_details` by a client whose provider is
`OFREPProvider(base)`, sending `Authorization: Bearer <token>` when the case
has a token. Fields left out of `expect` are not compared;
`metadata` is compared key by key. stdout is one JSON object, `{"results":
[...], "mismatches": [...]}`, each result being what the SDK returned; the
exit status is 1 when anything differs from what was expected, 2 on usage
errors.
"""

import json
import sys

from openfeature import api
from openfeature.contrib.provider.ofrep import OFREPProvider
from openfeature.evaluation_context import EvaluationContext


def client_for(base, token, clients):
    """One provider per base URL and token, each registered under its own domain."""
    domain = f"{base} {token}"
    if domain not in clients:
        headers = (lambda: {"Authorization": f"Bearer {token}"}) if token else None
        provider = OFREPProvider(base, headers_factory=headers, timeout=10.0)
        api.set_provider(provider, domain=domain)
        clients[domain] = api.get_client(domain=domain)
    return clients[domain]


def evaluate(case, clients):
    client = client_for(case["base"], case.get("token"), clients)
    context = EvaluationContext(
        targeting_key=case.get("targetingKey"),
        attributes=case.get("attributes", {}),
    )
    details = client.get_string_details(case["flag"], case["default"], context)
    return {
        "flag": details.flag_key,
        "value": details.value,
        "variant": details.variant,
        # Reason and ErrorCode are str enums; their values are the wire names.
        "reason": None if details.reason is None else str(details.reason),
        "error_code": None if details.error_code is None else str(details.error_code),
        "error_message": details.error_message,
        "metadata": dict(details.flag_metadata),
    }


def differences(expected, result):
    found = []
    for field, wanted in expected.items():
        if field == "metadata":
            for key, value in wanted.items():
                got = result["metadata"].get(key)
                if got != value:
                    found.append(f"metadata.{key}: expected {value!r}, got {got!r}")
        elif result.get(field) != wanted:
            found.append(f"{field}: expected {wanted!r}, got {result.get(field)!r}")
    return found


def main():
    try:
        cases = json.load(sys.stdin)["cases"]
    except (ValueError, KeyError, TypeError) as error:
        print(f"client.py: stdin must be {{\"cases\": [...]}}: {error}", file=sys.stderr)
        return 2
    clients = {}
    results, mismatches = [], []
    for index, case in enumerate(cases):
        result = evaluate(case, clients)
        results.append(result)
        for difference in differences(case.get("expect", {}), result):
            mismatches.append(f"case {index} ({case['flag']}, {case.get('targetingKey')!r}): {difference}")
    api.shutdown()
    json.dump({"results": results, "mismatches": mismatches}, sys.stdout, indent=1)
    sys.stdout.write("\n")
    return 1 if mismatches else 0


if __name__ == "__main__":
    sys.exit(main())

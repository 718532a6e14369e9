"""Run inside a lab pod: who does botocore (boto3's core) think we are?

    python3 scripts/lab/whoami-botocore.py <sts-endpoint-url>

Uses botocore's default credential chain (env, shared files, ..., then the EC2 instance metadata
service) and calls STS GetCallerIdentity. Prints one JSON line: {"arn", "accessKeyId", "method"}
or {"error", "message"} (exit 1).
"""
import json
import sys

import botocore.session


def main() -> int:
    if len(sys.argv) != 2:
        print("usage: whoami-botocore.py <sts-endpoint-url>", file=sys.stderr)
        return 2
    session = botocore.session.get_session()
    creds = session.get_credentials()
    if creds is None:
        print(json.dumps({"error": "NoCredentials", "message": "botocore found no credentials"}))
        return 1
    try:
        sts = session.create_client("sts", region_name="us-east-1", endpoint_url=sys.argv[1])
        arn = sts.get_caller_identity()["Arn"]
    except Exception as err:  # noqa: BLE001 - report whatever went wrong
        print(json.dumps({"error": type(err).__name__, "message": str(err)}))
        return 1
    print(json.dumps({"arn": arn, "accessKeyId": creds.access_key, "method": creds.method}))
    return 0


if __name__ == "__main__":
    sys.exit(main())

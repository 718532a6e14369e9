/**
 * Run inside a lab pod: who does the AWS SDK for JavaScript v3 think we are?
 *
 *   node dist/scripts/lab/whoami-sdk.js <sts-endpoint-url>
 *
 * An STSClient with no credentials configured, so the SDK's default chain
 * (@aws-sdk/credential-provider-node: env, ini files, process, web identity, ECS, then EC2 IMDS)
 * finds them. Prints one JSON line: {"arn", "accessKeyId"} or {"error", "message"} (exit 1).
 */
// A warning switch, not a credential: keeps the SDK's "Node 20 support ends" notice out of the output.
process.env.AWS_SDK_JS_NODE_VERSION_SUPPORT_WARNING_DISABLED ??= 'true';
const { GetCallerIdentityCommand, STSClient } = await import('@aws-sdk/client-sts');

const endpoint = process.argv[2];
if (endpoint === undefined) {
  process.stderr.write('usage: whoami-sdk <sts-endpoint-url>\n');
  process.exit(2);
}
const client = new STSClient({ region: 'us-east-1', endpoint });
try {
  const identity = await client.send(new GetCallerIdentityCommand({}));
  const creds = await client.config.credentials();
  process.stdout.write(`${JSON.stringify({ arn: identity.Arn, accessKeyId: creds.accessKeyId })}\n`);
} catch (err) {
  process.stdout.write(`${JSON.stringify({ error: (err as Error).name, message: (err as Error).message })}\n`);
  process.exitCode = 1;
} finally {
  client.destroy();
}

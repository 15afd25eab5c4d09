import { readFileSync } from 'node:fs';
import path from 'node:path';
import { UserError } from '@spotctl/shared';
import { defineCommand } from '../cli/define-command.ts';
import { Ec2Clients, loadEc2Sdk, sendOptions } from '../aws/clients.ts';
import { describeAwsError } from '../aws/errors.ts';
import { lifecycleRegions } from '../aws/lifecycle-regions.ts';
import { resolveRegions } from '../aws/pricing.ts';
import { TAG, tagMap } from '../aws/tags.ts';
import { formatDuration, table } from '../output/output.ts';
import { buildAmi, type AmiBuildResult } from '../providers/aws-ami.ts';

const LIST_TIMEOUT_MS = 60_000;

interface AmiOptions extends Record<string, unknown> {
  region?: string;
  regions?: string;
  arm?: boolean;
  gpu?: boolean;
  instanceType?: string;
  requirements?: string;
  sshCidr?: string;
  sshConfig?: string;
  json?: boolean;
}

function readRequirements(file: string): { name: string; contents: Buffer } {
  try {
    return { name: path.basename(file), contents: readFileSync(file) };
  } catch (error) {
    throw new UserError('SPOTCTL_USAGE', `--requirements: cannot read ${file}: ${(error as NodeJS.ErrnoException).code ?? String(error)}`, {
      remediation: 'give the path of a pip requirements file, e.g. --requirements requirements.txt',
      exitCode: 2,
    });
  }
}

export default defineCommand<AmiOptions>({
  name: 'ami',
  description: 'Bake a spotctl image (build) from stock Ubuntu 24.04 so runs skip the boot-time install, or list the baked ones (ls)',
  examples: [
    'spotctl ami build --region us-east-1',
    'spotctl ami build --region eu-west-1 --arm --requirements requirements.txt',
    'spotctl ami ls',
  ],
  configure: (cmd) =>
    cmd
      .argument('<action>', 'build | ls')
      .option('--region <region>', 'the region to bake in (AWS_REGION does the same); an image lives in one region')
      .option('--regions <list>', 'build: bake in each of these regions in turn; ls: where to look')
      .option('--arm', 'build: a Graviton (arm64) image instead of x86_64')
      .option('--gpu', 'build: bake from the AWS Deep Learning Base image (NVIDIA driver) for GPU runs (--gpus)')
      .option('--instance-type <type>', 'build: the builder instance type (default c7a.large, or c7g.large with --arm)')
      .option('--requirements <file>', "build: pip requirements whose packages go into the image's pip cache")
      .option('--ssh-cidr <cidr>', "build: allow SSH from this CIDR (default: this machine's public address /32)")
      .option('--ssh-config <file>', 'build: ssh client config for the connection to the builder')
      .option('--json', 'JSON on stdout'),
  run: async ([action], options, { out, store, testOverrides }) => {
    if (action === 'ls') {
      const regions = lifecycleRegions(options, store);
      using clients = new Ec2Clients();
      const { DescribeImagesCommand } = await loadEc2Sdk();
      const signal = AbortSignal.timeout(LIST_TIMEOUT_MS);
      const rows: {
        region: string;
        imageId: string;
        name: string;
        architecture: string;
        agentBuild: string;
        created: string;
        state: string;
      }[] = [];
      let failed = 0;
      await Promise.all(
        regions.map(async (region) => {
          try {
            const ec2 = await clients.forRegion(region);
            const r = await ec2.send(
              new DescribeImagesCommand({ Owners: ['self'], Filters: [{ Name: `tag:${TAG.ami}`, Values: ['true'] }] }),
              sendOptions(signal),
            );
            for (const image of r.Images ?? []) {
              const tags = tagMap(image.Tags);
              rows.push({
                region,
                imageId: image.ImageId ?? '?',
                name: image.Name ?? '',
                architecture: image.Architecture ?? '?',
                agentBuild: tags[TAG.agentBuild] ?? '?',
                created: tags[TAG.created] ?? image.CreationDate ?? '',
                state: image.State ?? '?',
              });
            }
          } catch (error) {
            failed++;
            out.warn(`${region} skipped: ${describeAwsError(error, { region })}`);
          }
        }),
      );
      rows.sort((a, b) => a.region.localeCompare(b.region) || b.created.localeCompare(a.created));
      out.data(
        rows,
        rows.length === 0
          ? `no spotctl image in ${regions.join(', ')} — bake one with: spotctl ami build --region ${regions[0] ?? 'us-east-1'}`
          : table(
              ['REGION', 'IMAGE', 'ARCH', 'AGENT', 'CREATED', 'STATE', 'NAME'],
              rows.map((r) => [r.region, r.imageId, r.architecture, r.agentBuild, r.created, r.state, r.name]),
            ),
      );
      return failed > 0 ? 1 : 0;
    }
    if (action !== 'build') {
      throw new UserError('SPOTCTL_USAGE', `unknown action '${action}'`, {
        remediation: 'use: spotctl ami build --region REGION, or spotctl ami ls',
        exitCode: 2,
      });
    }
    const selection = resolveRegions({
      ...(options.regions === undefined ? {} : { regions: options.regions }),
      ...(options.region === undefined ? {} : { region: options.region }),
    });
    if (options.regions === undefined && selection.pinnedBy === undefined) {
      throw new UserError('SPOTCTL_USAGE', 'say which region to bake in: an image lives in one region', {
        remediation: 'spotctl ami build --region us-east-1 (or --regions us-east-1,eu-west-1, or export AWS_REGION)',
        exitCode: 2,
      });
    }
    const requirements = options.requirements === undefined ? undefined : readRequirements(options.requirements);
    const built: AmiBuildResult[] = [];
    for (const region of selection.regions) {
      out.info(`baking a spotctl image in ${region}`);
      const result = await buildAmi({
        testOverrides,
        region,
        architecture: options.arm ? 'arm64' : 'x86_64',
        ...(options.gpu ? { gpu: true } : {}),
        out,
        ...(options.instanceType ? { instanceType: options.instanceType } : {}),
        ...(requirements ? { requirements } : {}),
        ...(options.sshCidr !== undefined ? { sshCidr: options.sshCidr } : {}),
        ...(options.sshConfig ? { sshConfig: options.sshConfig } : {}),
      });
      built.push(result);
      out.info(
        `${result.imageId} (${result.name}) is ready in ${region} after ${formatDuration(result.durationMs)}; runs there use it from now on`,
        { event: 'image', ...result },
      );
    }
    out.data(built, built.map((b) => `${b.region}\t${b.imageId}`).join('\n'));
    return 0;
  },
});

import { EC2ServiceException } from '@aws-sdk/client-ec2';
import { UserError, isErrorCode } from '@spotctl/shared';
import { describe, expect, it } from 'vitest';
import { AWS_ERRORS, awsErrorName, awsUserError, describeAwsError, failureScope, isNetworkError } from './errors.ts';

const awsError = (name: string, message = 'message from EC2'): EC2ServiceException =>
  new EC2ServiceException({ name, $fault: 'client', $metadata: { httpStatusCode: 400 }, message });

describe('the AWS error table', () => {
  it('gives every entry a valid code, a summary and a remediation', () => {
    const ctx = {
      region: 'eu-west-1',
      az: 'eu-west-1b',
      instanceType: 'c7a.2xlarge',
      vcpus: 8,
      market: 'spot' as const,
      action: 'RunInstances',
    };
    for (const [name, rule] of Object.entries(AWS_ERRORS)) {
      expect(isErrorCode(rule.code), name).toBe(true);
      expect(rule.summary(ctx).length, name).toBeGreaterThan(10);
      expect(rule.remediation(ctx).length, name).toBeGreaterThan(10);
      expect(rule.remediation({}).length, name).toBeGreaterThan(10);
    }
  });

  it('scopes capacity to the pool, quotas to the region, permissions as fatal', () => {
    expect(failureScope(awsError('InsufficientInstanceCapacity'))).toBe('pool');
    expect(failureScope(awsError('SpotMaxPriceTooLow'))).toBe('pool');
    expect(failureScope(awsError('Unsupported'))).toBe('pool');
    expect(failureScope(awsError('InsufficientFreeAddressesInSubnet'))).toBe('az');
    expect(failureScope(awsError('VcpuLimitExceeded'))).toBe('region-vcpus');
    expect(failureScope(awsError('MaxSpotInstanceCountExceeded'))).toBe('region');
    expect(failureScope(awsError('InstanceLimitExceeded'))).toBe('region');
    expect(failureScope(awsError('UnauthorizedOperation'))).toBe('fatal');
    expect(failureScope(awsError('InvalidParameterValue'))).toBe('fatal');
    expect(failureScope(awsError('SomethingNew'))).toBe('fatal');
  });

  it('names on-demand quotas by their own quota code', () => {
    const e = awsUserError(awsError('VcpuLimitExceeded'), {
      region: 'us-east-2',
      market: 'on-demand',
      vcpus: 16,
      instanceType: 'c6a.4xlarge',
    });
    expect(e).toBeInstanceOf(UserError);
    expect(e.remediation).toMatch(/--quota-code L-1216C47A --desired-value 32 --region us-east-2/);
  });

  it('names the G/VT and P quotas for GPU types, not the standard one', () => {
    const g = awsUserError(awsError('VcpuLimitExceeded'), { region: 'us-east-1', market: 'spot', vcpus: 4, instanceType: 'g5.xlarge' });
    expect(g.remediation).toContain('"All G and VT Spot Instance Requests"');
    expect(g.remediation).toMatch(/--quota-code L-3819A6DF --desired-value 32 --region us-east-1/);
    const p = awsUserError(awsError('MaxSpotInstanceCountExceeded'), { region: 'us-west-2', vcpus: 96, instanceType: 'p4d.24xlarge' });
    expect(p.remediation).toContain('"All P Spot Instance Requests"');
    expect(p.remediation).toMatch(/--quota-code L-7212CCBC --desired-value 192/);
    const onDemand = awsUserError(awsError('VcpuLimitExceeded'), { market: 'on-demand', instanceType: 'g6.xlarge' });
    expect(onDemand.remediation).toMatch(/"Running On-Demand G and VT instances".*--quota-code L-DB2E81BA/);
    const cpu = awsUserError(awsError('VcpuLimitExceeded'), { market: 'spot', instanceType: 'c7a.2xlarge' });
    expect(cpu.remediation).toMatch(/--quota-code L-34B43A08/);
    expect(cpu.remediation).not.toContain('G and VT');
  });

  it('reads the error name from SDK errors and plain objects', () => {
    expect(awsErrorName(awsError('RequestLimitExceeded'))).toBe('RequestLimitExceeded');
    expect(awsErrorName({ Code: 'AuthFailure' })).toBe('AuthFailure');
    expect(awsErrorName(new Error('plain'))).toBeUndefined();
  });

  it('keeps unknown AWS errors as UserErrors with a generic next step', () => {
    const e = awsUserError(awsError('BrandNewError', 'something'), { action: 'RunInstances', region: 'us-east-1' });
    expect(e.message).toBe('EC2 RunInstances failed (us-east-1): BrandNewError: something');
    expect(e.remediation).toMatch(/DEBUG=spotctl:\*/);
  });

  it('reports network failures (DNS, refused, timed out) as a network problem to check, not a bug', () => {
    const dns = Object.assign(new Error('getaddrinfo ENOTFOUND ec2.xx-fake-9.amazonaws.com'), {
      code: 'ENOTFOUND',
      syscall: 'getaddrinfo',
      hostname: 'ec2.xx-fake-9.amazonaws.com',
    });
    const refused = Object.assign(new Error('connect ECONNREFUSED 127.0.0.1:9'), { code: 'ECONNREFUSED', $metadata: { attempts: 3 } });
    const timedOut = Object.assign(new Error('connect ETIMEDOUT 10.0.0.1:443'), { code: 'ETIMEDOUT' });
    for (const error of [dns, refused, timedOut]) {
      expect(isNetworkError(error)).toBe(true);
      expect(failureScope(error)).toBe('region');
      const e = awsUserError(error, { action: 'DescribeInstanceTypes', region: 'xx-fake-9' });
      expect(e.code).toBe('SPOTCTL_AWS_NETWORK');
      expect(e.message).toMatch(/^could not reach the AWS endpoint of xx-fake-9 over the network/);
      expect(e.remediation).toMatch(/internet connection.*HTTPS_PROXY.*AWS_ENDPOINT_URL.*region name xx-fake-9/);
      expect(e.remediation).not.toMatch(/bug|DEBUG/);
      expect(describeAwsError(error)).not.toMatch(/AWS:/);
    }
    expect(isNetworkError(awsError('InsufficientInstanceCapacity'))).toBe(false);
  });
});

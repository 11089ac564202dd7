#!/usr/bin/env python3
"""Seeds and inspects the moto server for the aws provider's tests, with boto3 (moto's own dependency).

  moto.py ENDPOINT seed PREFIX SOURCE_REGION TARGET_REGION
      An AMI in SOURCE_REGION (from an instance of one of moto's default images, so it has a snapshot), a PostgreSQL
      DB instance in TARGET_REGION (the point-in-time source), and a hosted zone PREFIX.example with the record
      app.PREFIX.example A 192.0.2.10. Prints {"image", "zone_id", "db", "record"} as JSON.
  moto.py ENDPOINT state PREFIX TARGET_REGION ZONE_ID
      What the run changed, as JSON: images named PREFIX* and instances running from them in TARGET_REGION, DB
      instances named PREFIX*, the app record set, and the ids of all health checks (of every test).
  moto.py ENDPOINT seed-replica PREFIX SOURCE_REGION TARGET_REGION
      A PostgreSQL DB instance PREFIX-primary in SOURCE_REGION and its cross-region read replica PREFIX-replica in
      TARGET_REGION. Prints {"primary", "replica"}.
  moto.py ENDPOINT db REGION IDENTIFIER
      One DB instance as JSON: {"status", "replica_of"}, or null when there is none.
  moto.py ENDPOINT iam-user
      (On a moto with INITIAL_NO_AUTH_ACTION_COUNT=4.) An IAM user allowed everything and its access key, as
      {"access_key", "secret_key"}; it takes exactly 4 unauthenticated actions.

Credentials: the AWS_* variables of target/servers/env (moto accepts any unless started with auth).
"""
import json
import sys

import boto3


def client(endpoint, service, region="us-east-1"):
    return boto3.client(service, endpoint_url=endpoint, region_name=region)


def seed(endpoint, prefix, source_region, target_region):
    ec2 = client(endpoint, "ec2", source_region)
    base = ec2.describe_images(Owners=["amazon"])["Images"][0]["ImageId"]
    instance = ec2.run_instances(ImageId=base, MinCount=1, MaxCount=1, InstanceType="t3.micro")["Instances"][0]
    image = ec2.create_image(InstanceId=instance["InstanceId"], Name=f"{prefix}-web")["ImageId"]
    ec2.terminate_instances(InstanceIds=[instance["InstanceId"]])
    rds = client(endpoint, "rds", target_region)
    db = f"{prefix}-db"
    rds.create_db_instance(DBInstanceIdentifier=db, Engine="postgres", DBInstanceClass="db.t3.micro",
                           MasterUsername="app", MasterUserPassword="app-password-1", AllocatedStorage=20,
                           BackupRetentionPeriod=7)
    r53 = client(endpoint, "route53")
    zone = r53.create_hosted_zone(Name=f"{prefix}.example", CallerReference=prefix)["HostedZone"]["Id"]
    zone_id = zone.split("/")[-1]
    record = f"app.{prefix}.example"
    r53.change_resource_record_sets(HostedZoneId=zone_id, ChangeBatch={"Changes": [{"Action": "UPSERT",
        "ResourceRecordSet": {"Name": record, "Type": "A", "TTL": 300,
                              "ResourceRecords": [{"Value": "192.0.2.10"}]}}]})
    print(json.dumps({"image": image, "zone_id": zone_id, "db": db, "record": record}))


def state(endpoint, prefix, target_region, zone_id):
    ec2 = client(endpoint, "ec2", target_region)
    images = ec2.describe_images(Owners=["self"], Filters=[{"Name": "name", "Values": [f"{prefix}*"]}])["Images"]
    ids = [i["ImageId"] for i in images]
    running = []
    if ids:
        for r in ec2.describe_instances(Filters=[{"Name": "image-id", "Values": ids}])["Reservations"]:
            running += [i["InstanceId"] for i in r["Instances"] if i["State"]["Name"] not in ("terminated", "shutting-down")]
    rds = client(endpoint, "rds", target_region)
    dbs = [d["DBInstanceIdentifier"] for d in rds.describe_db_instances()["DBInstances"]
           if d["DBInstanceIdentifier"].startswith(prefix)]
    r53 = client(endpoint, "route53")
    sets = r53.list_resource_record_sets(HostedZoneId=zone_id)["ResourceRecordSets"]
    record = [s for s in sets if s["Name"] == f"app.{prefix}.example." and s["Type"] == "A"]
    print(json.dumps({
        "images": sorted(ids),
        "instances": sorted(running),
        "dbs": sorted(dbs),
        "record": record[0] if record else None,
        # Every test's, not only this prefix's: look for a given id in it.
        "health_check_ids": sorted(h["Id"] for h in r53.list_health_checks()["HealthChecks"]),
    }, sort_keys=True, default=str))


def seed_replica(endpoint, prefix, source_region, target_region):
    primary = client(endpoint, "rds", source_region).create_db_instance(
        DBInstanceIdentifier=f"{prefix}-primary", Engine="postgres", DBInstanceClass="db.t3.micro",
        MasterUsername="app", MasterUserPassword="app-password-1", AllocatedStorage=20,
        BackupRetentionPeriod=7)["DBInstance"]
    client(endpoint, "rds", target_region).create_db_instance_read_replica(
        DBInstanceIdentifier=f"{prefix}-replica", SourceDBInstanceIdentifier=primary["DBInstanceArn"],
        DBInstanceClass="db.t3.micro")
    print(json.dumps({"primary": f"{prefix}-primary", "replica": f"{prefix}-replica"}))


def db(endpoint, region, identifier):
    rds = client(endpoint, "rds", region)
    try:
        d = rds.describe_db_instances(DBInstanceIdentifier=identifier)["DBInstances"][0]
    except rds.exceptions.DBInstanceNotFoundFault:
        print("null")
        return
    print(json.dumps({"status": d["DBInstanceStatus"], "replica_of": d.get("ReadReplicaSourceDBInstanceIdentifier")}))


def iam_user(endpoint):
    iam = client(endpoint, "iam")
    iam.create_user(UserName="respawn")
    arn = iam.create_policy(PolicyName="all", PolicyDocument=json.dumps({"Version": "2012-10-17",
        "Statement": [{"Effect": "Allow", "Action": "*", "Resource": "*"}]}))["Policy"]["Arn"]
    iam.attach_user_policy(UserName="respawn", PolicyArn=arn)
    key = iam.create_access_key(UserName="respawn")["AccessKey"]
    print(json.dumps({"access_key": key["AccessKeyId"], "secret_key": key["SecretAccessKey"]}))


if __name__ == "__main__":
    endpoint, command, *args = sys.argv[1:]
    commands = {"seed": seed, "seed-replica": seed_replica, "state": state, "db": db, "iam-user": iam_user}
    commands[command](endpoint, *args)

#!/bin/sh
# One-shot init for the artifact store: the MLflow bucket, and a service user for the MLflow server that
# may use only that bucket (the root credentials stay with MinIO). Safe to run again.
set -eu

mc alias set store "http://minio:9000" "$MINIO_ROOT_USER" "$MINIO_ROOT_PASSWORD" >/dev/null
mc mb --ignore-existing "store/$MLFLOW_BUCKET"

policy="$(mktemp)"
cat > "$policy" <<JSON
{
  "Version": "2012-10-17",
  "Statement": [
    {"Effect": "Allow", "Action": ["s3:ListBucket", "s3:GetBucketLocation"],
     "Resource": ["arn:aws:s3:::$MLFLOW_BUCKET"]},
    {"Effect": "Allow", "Action": ["s3:GetObject", "s3:PutObject", "s3:DeleteObject"],
     "Resource": ["arn:aws:s3:::$MLFLOW_BUCKET/*"]}
  ]
}
JSON
mc admin policy create store mlflow-artifacts "$policy"
mc admin user add store "$MLFLOW_S3_ACCESS_KEY" "$MLFLOW_S3_SECRET_KEY"
mc admin policy attach store mlflow-artifacts --user "$MLFLOW_S3_ACCESS_KEY" 2>/dev/null || true
echo "bucket $MLFLOW_BUCKET ready"

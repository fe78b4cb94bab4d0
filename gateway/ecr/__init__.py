"""OCI operations performed as Amazon ECR API actions (through aiobotocore clients)."""

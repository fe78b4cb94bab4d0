"""An Amazon ECR emulator that speaks the AWS JSON 1.1 protocol of service ``ecr``.

botocore, aiobotocore, boto3 and the AWS CLI reach it through ``endpoint_url`` exactly as they
reach AWS. It implements both planes the gateway needs: repositories and images (which moto
also emulates) and the layer plane (uploads in parts, presigned downloads), storing blobs
content-addressed on disk and metadata in SQLite so that every acknowledged write survives a
crash. ``server.create_app`` embeds it; ``ecr-gateway emulator`` runs it alone.
"""

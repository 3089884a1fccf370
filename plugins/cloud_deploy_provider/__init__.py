"""Cloud Deploy: an Airflow provider that builds ML inference services into images and deploys them."""

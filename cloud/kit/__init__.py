"""What every cloud module shares: domain errors, the API's token check, cursors for paging."""

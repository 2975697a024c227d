"""What Klaviyo knows about the store, brought back into it: reports and their figures."""

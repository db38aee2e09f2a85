"""DolphinScheduler definitions of the train and deploy workflows; pyds.py submits and starts them."""

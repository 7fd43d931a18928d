"""globe-sms: SMS campaigns through Alibaba Cloud's BatchSendMessageToGlobe, orchestrated with Prefect 3."""

"""Composition root: the Functions app and the blueprints it registers. No logic lives here."""

import azure.durable_functions as df
import azure.functions as func

from activities import access as access_activities
from activities import access_request as access_request_activities
from activities import approval as approval_activities
from activities import self_check as self_check_activities
from orchestrators import access, access_request, approval, intake, request_status, self_check, teams_bot
from orchestrators import sweep as expiry_sweep
from shared.configuration import load_configuration

# Fail fast at start-up: a missing setting or a bad policy names itself in the host's log.
load_configuration()

app = df.DFApp(http_auth_level=func.AuthLevel.FUNCTION)
app.register_functions(self_check.bp)
app.register_functions(self_check_activities.bp)
app.register_functions(request_status.bp)
app.register_functions(intake.bp)
app.register_functions(access_request.bp)
app.register_functions(access_request_activities.bp)
app.register_functions(approval.bp)
app.register_functions(approval_activities.bp)
app.register_functions(teams_bot.bp)
app.register_functions(access.bp)
app.register_functions(access_activities.bp)
app.register_functions(expiry_sweep.bp)

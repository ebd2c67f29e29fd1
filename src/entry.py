"""The Worker's entrypoint: fetch -> the app, scheduled -> the cron."""

from workers import WorkerEntrypoint

from clairvora.app import handle_fetch, handle_scheduled


class Default(WorkerEntrypoint):
    async def fetch(self, request):
        return await handle_fetch(request, self.env, self.ctx)

    # workerd calls scheduled(controller, env, ctx) on the instance, like the
    # JavaScript handler's arguments; env and ctx are the instance's own.
    async def scheduled(self, controller, env, ctx):
        await handle_scheduled(controller, self.env, self.ctx)
